// End-to-end encryption against bigd with the published matrix-js-sdk and its
// Rust crypto (wasm). Usage: node e2ee.mjs http://127.0.0.1:PORT
//
// Scenarios (each step fails the run with a message when it does not happen):
//  1. alice and bob in an encrypted DM: alice sends, bob decrypts the exact text;
//  2. bob logs in a second device: it receives the room key and decrypts new messages;
//  3. bob bootstraps cross-signing: alice sees bob's device as signed by its owner;
//  4. bob creates a key backup: a new device restores it and decrypts old history;
//  5. bob sets up secret storage and a dehydrated device (MSC3814); with all his
//     devices offline alice sends a message; a new device rehydrates the
//     dehydrated one and decrypts it.

import "./node20-polyfills.mjs";
import * as sdk from "matrix-js-sdk";
import { CryptoEvent } from "matrix-js-sdk/lib/crypto-api/index.js";
import { logger } from "matrix-js-sdk/lib/logger.js";

const base = process.argv[2];
if (!base) {
    console.error("usage: node e2ee.mjs BASE_URL");
    process.exit(2);
}
const PASSWORD = "e2ee test password";
// The SDK logs a lot (decryption retries are expected here). Unless
// E2EE_VERBOSE is set, its output is kept and shown only when a step fails.
const sdkLog = [];
if (!process.env.E2EE_VERBOSE) {
    logger.setLevel("warn");
    for (const level of ["log", "info", "debug", "warn", "error", "trace"]) {
        console[level] = (...args) => {
            sdkLog.push(`${level}: ${args.map((a) => (a instanceof Error ? a.stack : String(a))).join(" ")}`);
            if (sdkLog.length > 400) sdkLog.shift();
        };
    }
}

function step(message) {
    process.stdout.write(`[e2ee] ${message}\n`);
}

function fail(message) {
    if (sdkLog.length > 0) {
        process.stderr.write(`[e2ee] the SDK's last log lines:\n${sdkLog.slice(-80).join("\n")}\n`);
    }
    process.stderr.write(`[e2ee] FAILED: ${message}\n`);
    process.exit(1);
}

async function api(method, path, token, body) {
    const response = await fetch(base + path, {
        method,
        headers: {
            "Content-Type": "application/json",
            ...(token ? { Authorization: `Bearer ${token}` } : {}),
        },
        body: body === undefined ? undefined : JSON.stringify(body),
    });
    const json = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${JSON.stringify(json)}`);
    return json;
}

async function register(username) {
    return api("POST", "/_matrix/client/v3/register", null, {
        username,
        password: PASSWORD,
        auth: { type: "m.login.dummy" },
        initial_device_display_name: `${username} first device`,
    });
}

async function login(username, name) {
    return api("POST", "/_matrix/client/v3/login", null, {
        type: "m.login.password",
        identifier: { type: "m.id.user", user: username },
        password: PASSWORD,
        initial_device_display_name: name,
    });
}

// The SDK will not start syncing without push rules. Servers without them
// (a bigd built before push rules existed) get an empty rule set client-side;
// nothing here depends on push rules.
let serverHasPushRules = true;

// Bob's secret storage key, once made: every client of his can unlock it.
let bobSecretStorageKey = null;
const cryptoCallbacks = {
    getSecretStorageKey: async ({ keys }) => {
        if (!bobSecretStorageKey) return null;
        const keyId = Object.keys(keys).find((id) => id === bobSecretStorageKey.keyId);
        return keyId ? [keyId, bobSecretStorageKey.privateKey] : null;
    },
    cacheSecretStorageKey: (keyId, _info, privateKey) => {
        bobSecretStorageKey = { keyId, privateKey };
    },
};

/** A started client with Rust crypto (in-memory store). */
async function startClient(session) {
    const client = sdk.createClient({
        baseUrl: base,
        userId: session.user_id,
        accessToken: session.access_token,
        deviceId: session.device_id,
        cryptoCallbacks,
    });
    if (!serverHasPushRules) {
        client.getPushRules = async () => ({
            global: { override: [], content: [], room: [], sender: [], underride: [] },
        });
    }
    await client.initRustCrypto({ useIndexedDB: false });
    const prepared = new Promise((resolve, reject) => {
        const timer = setTimeout(
            () => reject(new Error(`${session.user_id}'s first sync did not finish in 30 s`)),
            30_000,
        );
        client.on(sdk.ClientEvent.Sync, (state) => {
            if (state === "PREPARED" || state === "SYNCING") {
                clearTimeout(timer);
                resolve();
            }
        });
    });
    await client.startClient({ initialSyncLimit: 30 });
    await prepared;
    return client;
}

async function waitFor(what, check, timeoutMs = 30000) {
    const deadline = Date.now() + timeoutMs;
    let lastError;
    while (Date.now() < deadline) {
        try {
            const value = await check();
            if (value) return value;
        } catch (e) {
            lastError = e;
        }
        await new Promise((r) => setTimeout(r, 200));
    }
    throw new Error(`timed out waiting for ${what}${lastError ? `: ${lastError}` : ""}`);
}

/** The decrypted text of the event with `eventId` as `client` sees it. */
async function decryptedText(client, roomId, eventId) {
    const room = client.getRoom(roomId);
    if (!room) return null;
    const event = room.findEventById(eventId);
    if (!event) return null;
    if (event.isBeingDecrypted() || event.isDecryptionFailure()) {
        // A key may have arrived since: try again.
        await client.decryptEventIfNeeded(event, { isRetry: true });
    }
    if (event.isDecryptionFailure() || event.getType() !== "m.room.message") return null;
    return event.getContent().body;
}

async function expectDecrypts(client, roomId, eventId, text, who) {
    const got = await waitFor(`${who} to decrypt "${text}"`, () =>
        decryptedText(client, roomId, eventId),
    );
    if (got !== text) throw new Error(`${who} decrypted "${got}", expected "${text}"`);
    const event = client.getRoom(roomId).findEventById(eventId);
    if (!event.isEncrypted()) throw new Error(`the event ${eventId} was not encrypted`);
    step(`${who} decrypted "${text}"`);
}

async function main() {
    const suffix = Math.random().toString(36).slice(2, 8);
    const aliceSession = await register(`alice${suffix}`);
    const rules = await fetch(`${base}/_matrix/client/v3/pushrules/`, {
        headers: { Authorization: `Bearer ${aliceSession.access_token}` },
    });
    if (rules.status === 404) {
        serverHasPushRules = false;
        step("the server has no push rules: the clients use an empty rule set");
    }
    const bobSession = await register(`bob${suffix}`);
    const alice = await startClient(aliceSession);
    const bob = await startClient(bobSession);
    const clients = [alice, bob];
    try {
        // 1. Encrypted DM.
        const { room_id: roomId } = await alice.createRoom({
            invite: [bob.getUserId()],
            is_direct: true,
            preset: "trusted_private_chat",
            initial_state: [
                {
                    type: "m.room.encryption",
                    state_key: "",
                    content: { algorithm: "m.megolm.v1.aes-sha2" },
                },
            ],
        });
        await waitFor("bob's invite", () => bob.getRoom(roomId)?.getMyMembership() === "invite");
        await bob.joinRoom(roomId);
        await waitFor("alice to see bob joined", () =>
            alice.getRoom(roomId)?.getMember(bob.getUserId())?.membership === "join",
        );
        if (!(await alice.getCrypto().isEncryptionEnabledInRoom(roomId))) {
            throw new Error("alice's client does not see the room as encrypted");
        }
        const first = "Hello Bob, this is secret 🤫";
        const { event_id: firstId } = await alice.sendTextMessage(roomId, first);
        await expectDecrypts(bob, roomId, firstId, first, "bob");

        // 2. Bob's second device gets keys for new messages.
        const bob2Session = await login(bobSession.user_id, "bob second device");
        const bob2 = await startClient(bob2Session);
        clients.push(bob2);
        await waitFor("alice to see bob's second device", async () => {
            const devices = await alice.getCrypto().getUserDeviceInfo([bob.getUserId()], true);
            return devices.get(bob.getUserId())?.has(bob2Session.device_id);
        });
        const second = "A second message, for both of Bob's devices";
        const { event_id: secondId } = await alice.sendTextMessage(roomId, second);
        await expectDecrypts(bob2, roomId, secondId, second, "bob's second device");
        await expectDecrypts(bob, roomId, secondId, second, "bob");

        // 3. Cross-signing.
        await bob.getCrypto().bootstrapCrossSigning({
            authUploadDeviceSigningKeys: async (makeRequest) => {
                await makeRequest({
                    type: "m.login.password",
                    identifier: { type: "m.id.user", user: bob.getUserId() },
                    password: PASSWORD,
                });
            },
        });
        await waitFor("bob's cross-signing to be ready", () => bob.getCrypto().isCrossSigningReady());
        const bobDevice = bob.getDeviceId();
        await waitFor("alice to see bob's device cross-signed by bob", async () => {
            const status = await alice.getCrypto().getDeviceVerificationStatus(bob.getUserId(), bobDevice);
            return status?.signedByOwner;
        });
        step("alice sees bob's device cross-signed by its owner");
        const identity = await alice.getCrypto().getUserVerificationStatus(bob.getUserId());
        if (!identity) throw new Error("alice has no verification status for bob");

        // 4. Key backup, restored on a new device.
        await bob.getCrypto().resetKeyBackup();
        const version = await waitFor("bob's key backup to be active", () =>
            bob.getCrypto().getActiveSessionBackupVersion(),
        );
        await waitFor("bob's room keys in the backup", async () => {
            const info = await api("GET", "/_matrix/client/v3/room_keys/version", bobSession.access_token);
            return info.version === version && info.count >= 1;
        });
        step(`key backup version ${version} holds bob's room keys`);
        const backupKey = await bob.getCrypto().getSessionBackupPrivateKey();
        if (!backupKey) throw new Error("bob's client has no backup decryption key");

        const bob3Session = await login(bobSession.user_id, "bob restored device");
        const bob3 = await startClient(bob3Session);
        clients.push(bob3);
        await bob3.getCrypto().storeSessionBackupPrivateKey(backupKey, version);
        const restored = await bob3.getCrypto().restoreKeyBackup();
        if (!restored || restored.imported < 1) {
            throw new Error(`restoring the backup imported nothing: ${JSON.stringify(restored)}`);
        }
        step(`bob's new device restored ${restored.imported} key(s) from the backup`);
        await expectDecrypts(bob3, roomId, firstId, first, "bob's restored device (old history)");
        await expectDecrypts(bob3, roomId, secondId, second, "bob's restored device (old history)");

        // 5. Dehydrated device.
        const recovery = await bob.getCrypto().createRecoveryKeyFromPassphrase();
        await bob.getCrypto().bootstrapSecretStorage({
            createSecretStorageKey: async () => recovery,
            setupNewSecretStorage: true,
        });
        if (!(await bob.getCrypto().isDehydrationSupported())) {
            throw new Error("the client does not see dehydration as supported");
        }
        await bob.getCrypto().startDehydration({ createNewKey: true });
        const dehydrated = await api(
            "GET",
            "/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device",
            bobSession.access_token,
        );
        step(`bob's dehydrated device is ${dehydrated.device_id}`);
        await waitFor("alice to see bob's dehydrated device", async () => {
            const devices = await alice.getCrypto().getUserDeviceInfo([bob.getUserId()], true);
            return devices.get(bob.getUserId())?.has(dehydrated.device_id);
        });
        for (const client of [bob, bob2, bob3]) client.stopClient();
        const third = "Sent while all of Bob's devices were offline";
        const { event_id: thirdId } = await alice.sendTextMessage(roomId, third);
        const queued = await api(
            "POST",
            `/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device/${encodeURIComponent(dehydrated.device_id)}/events`,
            bobSession.access_token,
            {},
        );
        if (queued.events.length < 1) throw new Error("nothing was sent to bob's dehydrated device");
        const bob4Session = await login(bobSession.user_id, "bob rehydrating device");
        const bob4 = await startClient(bob4Session);
        clients.push(bob4);
        const rehydrated = new Promise((resolve) =>
            bob4.on(CryptoEvent.RehydrationCompleted, resolve),
        );
        // The new device takes the cross-signing keys from secret storage,
        // once it has fetched bob's public cross-signing keys.
        await bob4.getCrypto().getUserDeviceInfo([bob4.getUserId()], true);
        await waitFor("bob's new device to know his cross-signing keys", async () => {
            const status = await bob4.getCrypto().getCrossSigningStatus();
            return status.publicKeysOnDevice && status.privateKeysInSecretStorage;
        });
        await bob4.getCrypto().bootstrapCrossSigning({});
        await bob4.getCrypto().startDehydration();
        await rehydrated;
        step("bob's new device rehydrated the dehydrated device");
        await expectDecrypts(bob4, roomId, thirdId, third, "bob's rehydrating device");
    } finally {
        for (const client of clients) client.stopClient();
    }
}

const overall = setTimeout(() => fail("the scenarios took longer than 4 minutes"), 240_000);

main().then(
    () => {
        clearTimeout(overall);
        step("all scenarios passed");
        process.exit(0);
    },
    (e) => fail(e.stack || String(e)),
);
