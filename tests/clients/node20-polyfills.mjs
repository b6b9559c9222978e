// matrix-js-sdk 37.13 declares Node.js 22; the one Node 22 API it uses that
// Node 20 lacks is Promise.withResolvers (ES2024). Provide it on Node 20.
if (typeof Promise.withResolvers !== "function") {
    Promise.withResolvers = function withResolvers() {
        let resolve;
        let reject;
        const promise = new this((res, rej) => {
            resolve = res;
            reject = rej;
        });
        return { promise, resolve, reject };
    };
}
