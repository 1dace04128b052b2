//! Who may connect: everyone (trust), or whoever knows the password,
//! checked with SCRAM-SHA-256 so that it never crosses the wire.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use futures::sink::Sink;
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::sasl::scram::{ScramAuth, gen_salted_password};
use pgwire::api::auth::{
    AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler,
    finish_authentication, protocol_negotiation, save_startup_parameters_to_metadata,
};
use pgwire::api::{ClientInfo, PidSecretKeyGenerator, RandomPidSecretKeyGenerator};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};

use super::compat::PgSettings;

/// SCRAM iterations (Postgres' default).
const ITERATIONS: usize = 4096;

/// The parameters every client is told at startup.
fn parameters() -> DefaultServerParameterProvider {
    let defaults = PgSettings::default();
    let mut p = DefaultServerParameterProvider::default();
    let get = |k: &str| defaults.get(k).unwrap_or_default().to_string();
    p.server_version = get("server_version");
    p.date_style = get("DateStyle");
    p.time_zone = get("TimeZone");
    p.interval_style = get("IntervalStyle");
    p.search_path = get("search_path");
    p
}

/// The password, salted once per server.
#[derive(Debug)]
struct Secret {
    salt: Vec<u8>,
    salted: Vec<u8>,
}

#[async_trait]
impl AuthSource for Secret {
    async fn get_password(&self, _login: &LoginInfo) -> PgWireResult<Password> {
        Ok(Password::new(Some(self.salt.clone()), self.salted.clone()))
    }
}

/// What a trusting handshake tells and hands out.
pub(crate) struct Trust {
    parameters: DefaultServerParameterProvider,
    keys: RandomPidSecretKeyGenerator,
}

/// The startup handshake.
pub(crate) enum Startup {
    /// Every client is let in.
    Trust(Box<Trust>),
    /// Clients prove they know the password.
    Scram(Box<SASLAuthStartupHandler<DefaultServerParameterProvider>>),
}

impl Startup {
    /// Trust without a password; SCRAM-SHA-256 with one.
    pub(crate) fn new(password: Option<&str>) -> Self {
        match password {
            None => Startup::Trust(Box::new(Trust {
                parameters: parameters(),
                keys: RandomPidSecretKeyGenerator::default(),
            })),
            Some(password) => {
                let salt = rand::random::<[u8; 16]>().to_vec();
                let salted = gen_salted_password(password, &salt, ITERATIONS);
                let mut scram = ScramAuth::new(Arc::new(Secret { salt, salted }));
                scram.set_iterations(ITERATIONS);
                Startup::Scram(Box::new(
                    SASLAuthStartupHandler::new(Arc::new(parameters())).with_scram(scram),
                ))
            }
        }
    }
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match self {
            Startup::Scram(scram) => scram.on_startup(client, message).await,
            Startup::Trust(trust) => {
                if let PgWireFrontendMessage::Startup(startup) = &message {
                    protocol_negotiation(client, startup).await?;
                    save_startup_parameters_to_metadata(client, startup);
                    let (pid, key) = trust.keys.generate(client);
                    client.set_pid_and_secret_key(pid, key);
                    finish_authentication(client, &trust.parameters).await?;
                }
                Ok(())
            }
        }
    }
}
