//! Client-Server API handlers: parse (ruma), call a service, map the result.

mod account;
mod account_data;
mod devices;
mod discovery;
mod filter;
mod profile;
mod session;

use axum::Router;

use super::{AppState, ruma::RouterExt};

pub fn routes(router: Router<AppState>) -> Router<AppState> {
    router
        // discovery
        .ruma(discovery::versions)
        .ruma(discovery::capabilities)
        // session
        .ruma(session::login_types)
        .ruma(session::login)
        .ruma(session::logout)
        .ruma(session::logout_all)
        .ruma(session::refresh)
        // account
        .ruma(account::register)
        .ruma(account::username_available)
        .ruma(account::registration_token_validity)
        .ruma(account::whoami)
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
        // filters
        .ruma(filter::create)
        .ruma(filter::get)
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
