//! Platform client tests: the real Exosite client against the real emulator over loopback HTTP.
//! One test binary; one module per area.

mod content;
mod exosense;
mod faults;
mod identities;
mod outbound;
mod packages;
mod security;

#[path = "../support/mod.rs"]
mod support;

/// The shared test emulator (tests/support/emulator.rs) with the platform tests' token, plus
/// clients configured for tests.
pub mod harness {
    use std::sync::Arc;
    use std::time::Duration;

    use otau_operator::net::outbound::OutboundPolicy;
    use otau_operator::platform::{
        ClientConfig, ExoSenseConfig, ExositePlatform, PlatformMetrics, RateLimit, RetryPolicy,
        SecretToken, StaticToken,
    };

    use crate::support::emulator::{EmulatorSetup, TestEmulator};

    /// The connector every test uses.
    pub const CID: &str = "t41hp23nod8s00000";
    /// The management token the emulator accepts.
    pub const MTOKEN: &str = "9b1f0c2d3e4a5b6c7d8e9f00112233445566aabb";
    /// An ExoSense Automation token the emulator accepts (GraphQL only).
    pub const XTOKEN: &str = "5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e";
    /// The instance name in the User-Agent.
    pub const INSTANCE: &str = "otau-operator-test-0";

    /// A running emulator.
    pub struct Emu(TestEmulator);

    impl std::ops::Deref for Emu {
        type Target = TestEmulator;
        fn deref(&self) -> &TestEmulator {
            &self.0
        }
    }

    impl Emu {
        /// Starts the emulator.
        pub async fn start() -> Emu {
            Emu(TestEmulator::start(EmulatorSetup {
                connector_id: CID.to_string(),
                management_tokens: vec![MTOKEN.to_string()],
                automation_tokens: vec![XTOKEN.to_string()],
            })
            .await)
        }

        /// A client config for tests: fast retries, a generous rate limit, and the emulator's
        /// address trusted as a platform host (it is a loopback address, which the outbound
        /// policy refuses by default).
        pub fn config(&self, token: &str) -> ClientConfig {
            let mut c = ClientConfig::new(
                CID,
                self.management_url(),
                Arc::new(StaticToken(SecretToken::new(token))),
            );
            c.outbound = OutboundPolicy::new(false, ["127.0.0.1"]).expect("policy");
            c.instance = INSTANCE.to_string();
            c.request_timeout = Duration::from_secs(10);
            c.retry = RetryPolicy {
                max_tries: 5,
                initial_backoff: Duration::from_millis(10),
                max_backoff: Duration::from_millis(100),
            };
            c.rate_limit = RateLimit {
                per_second: 10_000.0,
                burst: 10_000,
            };
            c
        }

        /// The same with ExoSense configured (the emulator accepts its management token there).
        pub fn config_with_exosense(&self) -> ClientConfig {
            self.config_with_exosense_token(MTOKEN)
        }

        /// The good management token, and `exosense_token` for ExoSense.
        pub fn config_with_exosense_token(&self, exosense_token: &str) -> ClientConfig {
            let mut c = self.config(MTOKEN);
            c.exosense = Some(ExoSenseConfig {
                graphql_url: self.graphql_url(),
                credentials: Arc::new(StaticToken(SecretToken::new(exosense_token))),
            });
            c
        }

        /// A client with the good token.
        pub fn client(&self) -> ExositePlatform {
            ExositePlatform::new(self.config(MTOKEN), None).expect("client")
        }

        /// A client from `config`, with metrics.
        pub fn client_with(
            &self,
            config: ClientConfig,
            metrics: Option<Arc<PlatformMetrics>>,
        ) -> ExositePlatform {
            ExositePlatform::new(config, metrics).expect("client")
        }
    }

    /// The User-Agent the client must send.
    pub fn expected_user_agent() -> String {
        format!("otau-operator/{} ({INSTANCE})", env!("CARGO_PKG_VERSION"))
    }
}
