//! What the account mails say. Links: `ALIAS_PUBLIC_URL` for the ones this server answers,
//! `ALIAS_APP_URL` for the ones the app opens.

use crate::config::MailConfig;
use crate::mailer::Mail;

use super::email_tokens::Issued;

pub fn verify_email(config: &MailConfig, to: &str, issued: &Issued) -> Mail {
    Mail {
        to: to.to_owned(),
        subject: "Confirm your email address for ALIAS".to_owned(),
        text: format!(
            "Confirm that this is your address by opening this link:\n\n{link}\n\n\
             or by entering this code in the app: {code}\n\n\
             The link and code work once, for 24 hours. If you did not create an ALIAS account, \
             ignore this mail.\n",
            link = verify_link(config, issued),
            code = issued.code,
        ),
    }
}

pub fn change_email(config: &MailConfig, to: &str, issued: &Issued) -> Mail {
    Mail {
        to: to.to_owned(),
        subject: "Confirm your new email address for ALIAS".to_owned(),
        text: format!(
            "Your ALIAS account will use this address once you confirm it by opening this \
             link:\n\n{link}\n\nor by entering this code in the app: {code}\n\n\
             The link and code work once, for 24 hours. If you did not ask for this, ignore this \
             mail.\n",
            link = verify_link(config, issued),
            code = issued.code,
        ),
    }
}

pub fn email_change_notice(to: &str, new_email: &str) -> Mail {
    Mail {
        to: to.to_owned(),
        subject: "Your ALIAS email address is being changed".to_owned(),
        text: format!(
            "Someone signed in to your ALIAS account asked to use {new_email} instead of this \
             address. Nothing changes until that address is confirmed. If this was not you, \
             change your password now.\n"
        ),
    }
}

pub fn reset_password(config: &MailConfig, to: &str, issued: &Issued) -> Mail {
    let separator = if config.app_url.ends_with('/') || config.app_url.ends_with("://") {
        ""
    } else {
        "/"
    };
    Mail {
        to: to.to_owned(),
        subject: "Reset your ALIAS password".to_owned(),
        text: format!(
            "To choose a new password, open this link on your phone:\n\n\
             {app}{separator}reset-password?token={token}\n\n\
             or enter this code in the app: {code}\n\n\
             The link and code work once, for 24 hours. If you did not ask for this, ignore this \
             mail: your password stays as it is.\n",
            app = config.app_url,
            token = issued.token,
            code = issued.code,
        ),
    }
}

pub fn password_changed(to: &str) -> Mail {
    Mail {
        to: to.to_owned(),
        subject: "Your ALIAS password was changed".to_owned(),
        text: "The password of your ALIAS account was just reset, and every device was signed \
               out. If this was not you, reset it again from the sign-in screen right away.\n"
            .to_owned(),
    }
}

fn verify_link(config: &MailConfig, issued: &Issued) -> String {
    format!("{}/auth/verify?token={}", config.public_url, issued.token)
}
