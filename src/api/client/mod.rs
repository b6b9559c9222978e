//! Client-Server API handlers: parse (ruma), call a service, map the result.

mod account;
mod account_data;
mod admin;
mod backup;
mod dehydrated;
mod devices;
mod directory;
pub mod discovery;
mod ephemeral;
mod filter;
mod keys;
mod membership;
mod messenger;
mod openid;
mod presence;
mod profile;
mod push;
mod relations;
mod rooms;
mod search;
mod session;
mod sms;
mod space;
mod sync;
mod tags;
mod thirdparty;
mod to_device;
mod user_directory;
mod voip;

use axum::Router;

use super::{AppState, ruma::RouterExt};

pub fn routes(router: Router<AppState>) -> Router<AppState> {
    router
        // discovery
        .ruma(discovery::versions)
        .ruma(discovery::capabilities)
        // session
        .ruma(session::login_types)
        .route(
            "/_matrix/client/r0/login",
            axum::routing::post(session::login_checked),
        )
        .route(
            "/_matrix/client/v3/login",
            axum::routing::post(session::login_checked),
        )
        .ruma(session::logout)
        .ruma(session::logout_all)
        .ruma(session::refresh)
        // account
        .ruma(account::register)
        .ruma(account::username_available)
        .ruma(account::registration_token_validity)
        .ruma(account::whoami)
        .ruma(admin::whois)
        .ruma(openid::request_token)
        .ruma(voip::turn_server)
        .ruma(thirdparty::protocols)
        .ruma(thirdparty::protocol)
        .ruma(thirdparty::location_for_protocol)
        .ruma(thirdparty::user_for_protocol)
        .ruma(thirdparty::location_for_alias)
        .ruma(thirdparty::user_for_user_id)
        .ruma(account::change_password)
        .ruma(account::deactivate)
        .ruma(account::threepids)
        .ruma(account::register_email_token)
        .ruma(account::register_msisdn_token)
        .ruma(account::password_email_token)
        .ruma(account::password_msisdn_token)
        .ruma(account::threepid_email_token)
        .ruma(account::threepid_msisdn_token)
        // devices
        .ruma(devices::list)
        .ruma(devices::get)
        .ruma(devices::update)
        .ruma(devices::delete)
        .ruma(devices::delete_many)
        // profile
        .ruma(profile::get_profile)
        .ruma(profile::get_field)
        .ruma(profile::set_field)
        .ruma(profile::delete_field)
        // account data
        .ruma(account_data::set_global)
        .ruma(account_data::get_global)
        .ruma(account_data::set_room)
        .ruma(account_data::get_room)
        // push
        .ruma(push::all)
        .ruma(push::global)
        .ruma(push::get_rule)
        .ruma(push::set_rule)
        .ruma(push::delete_rule)
        .ruma(push::get_enabled)
        .ruma(push::set_enabled)
        .ruma(push::get_actions)
        .ruma(push::set_actions)
        .ruma(push::pushers)
        .ruma(push::set_pusher)
        .ruma(push::notifications)
        // room tags and the user directory
        .ruma(tags::get)
        .ruma(tags::put)
        .ruma(tags::delete)
        .ruma(user_directory::search)
        // filters
        .ruma(filter::create)
        .ruma(filter::get)
        // sync and device messaging
        .ruma(sync::sync)
        .ruma(to_device::send)
        .ruma(ephemeral::typing)
        .ruma(ephemeral::receipt)
        .ruma(ephemeral::read_markers)
        .ruma(presence::set)
        .ruma(presence::get)
        // rooms
        .ruma(rooms::create)
        .ruma(rooms::joined)
        .ruma(rooms::send_message)
        .ruma_empty_last(rooms::send_state)
        .ruma_empty_last(rooms::state_event)
        .ruma(rooms::state)
        .ruma(rooms::get_event)
        .ruma(rooms::messages)
        .ruma(rooms::members)
        .ruma(rooms::joined_members)
        .ruma(rooms::redact)
        .ruma(rooms::upgrade)
        .ruma(rooms::summary)
        .ruma(space::hierarchy)
        .ruma(relations::all)
        .ruma(relations::by_rel_type)
        .ruma(relations::by_rel_and_event_type)
        .ruma(relations::threads)
        .ruma(search::search)
        .ruma(search::context)
        .ruma(search::timestamp_to_event)
        .ruma(search::report_event)
        .ruma(search::report_room)
        .ruma(search::report_user)
        // membership
        .ruma(membership::invite)
        .ruma(membership::join_by_id)
        .ruma(membership::join_by_id_or_alias)
        .ruma(membership::leave)
        .ruma(membership::kick)
        .ruma(membership::ban)
        .ruma(membership::unban)
        .ruma(membership::forget)
        .ruma(membership::knock)
        .ruma(membership::mutual_rooms)
        // aliases and directory
        .ruma(directory::create)
        .ruma(directory::get)
        .ruma(directory::delete)
        .ruma(directory::room_aliases)
        .ruma(directory::get_visibility)
        .ruma(directory::set_visibility)
        .ruma(directory::public_rooms)
        .ruma(directory::public_rooms_filtered)
        // end-to-end encryption
        .ruma(keys::upload)
        .ruma(keys::query)
        .ruma(keys::claim)
        .ruma(keys::changes)
        .ruma(keys::upload_signing_keys)
        .ruma(keys::upload_signatures)
        .ruma(backup::create_version)
        .ruma(backup::latest_version)
        .ruma(backup::get_version)
        .ruma(backup::update_version)
        .ruma(backup::delete_version)
        .ruma(backup::put_keys)
        .ruma(backup::put_room_keys)
        .ruma(backup::put_session_key)
        .ruma(backup::get_keys)
        .ruma(backup::get_room_keys)
        .ruma(backup::get_session_key)
        .ruma(backup::delete_keys)
        .ruma(backup::delete_room_keys)
        .ruma(backup::delete_session_key)
        .ruma(dehydrated::put)
        .ruma(dehydrated::get)
        .ruma(dehydrated::delete)
        .ruma(dehydrated::events)
        // phone numbers: sign-in by SMS and msisdn 3PIDs (docs/phone.md)
        .ruma(account::add_threepid)
        .ruma(account::delete_threepid)
        .ruma(account::bind_threepid)
        .ruma(account::unbind_threepid)
        .route(
            "/_matrix/client/unstable/ai.iambig/sms/request",
            axum::routing::post(sms::request_code),
        )
        .route(
            "/_matrix/client/unstable/ai.iambig/msisdn/submit_token",
            axum::routing::post(sms::submit_token),
        )
        .route(
            "/_matrix/client/v3/account/3pid",
            axum::routing::post(sms::add_threepid_via_identity_server),
        )
        .route(
            "/_matrix/client/r0/account/3pid",
            axum::routing::post(sms::add_threepid_via_identity_server),
        )
        // messenger extensions (contacts, identity lookup, dialogs, last seen)
        .merge(messenger::routes())
}

/// Endpoints that act on a `{userId}` only allow the caller's own id.
fn ensure_self(
    caller: &ruma::UserId,
    target: &ruma::UserId,
    what: &str,
) -> crate::error::Result<()> {
    if caller != target {
        return Err(crate::error::Error::forbidden(format!(
            "You cannot {what} of another user"
        )));
    }
    Ok(())
}
