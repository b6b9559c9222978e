use std::collections::BTreeMap;

use axum::extract::State;
use ruma::{
    RoomVersionId,
    api::client::discovery::{
        get_capabilities::v3::{self as caps, Capabilities, RoomVersionStability},
        get_supported_versions,
    },
};

use crate::{
    api::{
        AppState,
        ruma::{Ruma, RumaResponse},
    },
    error::Result,
};

/// Spec versions whose endpoints bigd serves. Later versions are added once the
/// features they require work (authenticated media, v1.11, first).
pub const SUPPORTED_VERSIONS: &[&str] = &[
    "r0.5.0", "r0.6.0", "r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8",
    "v1.9", "v1.10", "v1.11",
];

/// The room versions bigd supports, and the one new rooms get.
pub const ROOM_VERSIONS: &[RoomVersionId] =
    &[RoomVersionId::V10, RoomVersionId::V11, RoomVersionId::V12];
pub const DEFAULT_ROOM_VERSION: RoomVersionId = RoomVersionId::V12;

pub async fn versions(
    State(s): State<AppState>,
    _: Ruma<get_supported_versions::Request>,
) -> Result<RumaResponse<get_supported_versions::Response>> {
    let mut response = get_supported_versions::Response::new(
        SUPPORTED_VERSIONS.iter().map(|v| (*v).to_owned()).collect(),
    );
    response.unstable_features = BTreeMap::from([
        // Custom profile fields (stable in v1.16) on the v3 paths.
        ("uk.tcpip.msc4133".to_owned(), true),
        ("uk.tcpip.msc4133.stable".to_owned(), true),
        // Dehydrated devices (docs/e2ee.md).
        ("org.matrix.msc3814".to_owned(), true),
        // Authenticated media (stable in v1.11).
        ("org.matrix.msc3916.stable".to_owned(), true),
        // Sign-in by SMS code (docs/extensions.md).
        ("ai.iambig.sms".to_owned(), true),
        // Messenger extensions (docs/extensions.md).
        (
            "ai.iambig.contacts".to_owned(),
            s.config.messenger.contact_discovery,
        ),
        (
            "ai.iambig.delivered".to_owned(),
            s.config.messenger.delivered_receipts,
        ),
        ("ai.iambig.dialogs".to_owned(), true),
        ("ai.iambig.last_seen".to_owned(), s.presence.enabled()),
    ]);
    Ok(response.into())
}

#[allow(deprecated)] // the pre-v1.16 capabilities stay for older clients
pub async fn capabilities(
    State(_): State<AppState>,
    _: Ruma<caps::Request>,
) -> Result<RumaResponse<caps::Response>> {
    let mut c = Capabilities::new();
    c.change_password.enabled = true;
    c.set_displayname.enabled = true;
    c.set_avatar_url.enabled = true;
    // Phone numbers can be added and removed (email is not supported).
    c.thirdparty_id_changes.enabled = true;
    c.get_login_token.enabled = false;
    c.room_versions.default = DEFAULT_ROOM_VERSION;
    c.room_versions.available = ROOM_VERSIONS
        .iter()
        .map(|v| (v.clone(), RoomVersionStability::Stable))
        .collect();
    c.profile_fields = Some(caps::ProfileFieldsCapability::new(true));
    Ok(caps::Response::new(c).into())
}
