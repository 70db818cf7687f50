//! Fault injection on the device MQTT API: the emulator's fault rules (src/emulator/faults)
//! that name `mqtt.connect`, `mqtt.publish` or `mqtt.deliver` (or `mqtt.*`) apply to MQTT
//! sessions. MQTT has no error answer for a publish, so a rule's outcomes map to what a device
//! can see:
//!
//! | Rule outcome | `mqtt.connect` | `mqtt.publish` | `mqtt.deliver` |
//! |---|---|---|---|
//! | `latency_ms` | CONNACK later | PUBACK (and the write) later | push later |
//! | `drop_rate` | closed without CONNACK | closed, not written, no PUBACK | push lost, session kept |
//! | `error_rate`, `throttle_rate` | CONNACK 3 (server unavailable), closed | closed, not written | closed |
//!
//! The rate limit (`--rate-limit`) never applies to MQTT.

use super::super::faults::{Action, Faults, RouteInfo};

/// What a session does after the fault decision for one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Injected {
    /// Go on.
    Pass,
    /// Lose it: close without an answer (connect, publish) or skip the push (deliver).
    Drop,
    /// Refuse it: CONNACK 3 (connect), or close (publish, deliver).
    Refuse,
}

/// Decides the fault for MQTT step `name` on `connector`, waiting out any added latency.
pub(crate) async fn inject(
    faults: &Faults,
    name: &'static str,
    connector: Option<&str>,
) -> Injected {
    let decision = faults.decide(&RouteInfo::mqtt(name, connector));
    if !decision.latency.is_zero() {
        tokio::time::sleep(decision.latency).await;
    }
    injected(decision.action)
}

/// The MQTT meaning of a fault action.
fn injected(action: Action) -> Injected {
    match action {
        Action::Pass | Action::RateLimited { .. } => Injected::Pass,
        Action::Drop => Injected::Drop,
        Action::Error(_) | Action::Throttle { .. } => Injected::Refuse,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulator::faults::{FaultConfig, FaultRule};

    #[test]
    fn fault_actions_map_to_what_an_mqtt_device_can_see() {
        assert_eq!(injected(Action::Pass), Injected::Pass);
        assert_eq!(injected(Action::Drop), Injected::Drop);
        assert_eq!(injected(Action::Error(503)), Injected::Refuse);
        assert_eq!(
            injected(Action::Throttle {
                retry_after_secs: 1
            }),
            Injected::Refuse
        );
        assert_eq!(
            injected(Action::RateLimited {
                retry_after_secs: 1
            }),
            Injected::Pass
        );
    }

    #[tokio::test]
    async fn rules_name_mqtt_steps_and_the_rate_limit_leaves_them_alone() {
        let mut drop_publish = FaultRule::new("mqtt.publish");
        drop_publish.drop_rate = 1.0;
        let mut refuse_connect = FaultRule::new("MQTT mqtt.connect");
        refuse_connect.error_rate = 1.0;
        let faults = Faults::new(FaultConfig {
            seed: 1,
            rules: vec![drop_publish, refuse_connect],
            rate_limit: Some(crate::emulator::faults::RateLimit {
                per_second: 0.001,
                burst: 1,
            }),
        })
        .unwrap();
        assert_eq!(
            inject(&faults, "mqtt.publish", Some("c")).await,
            Injected::Drop
        );
        assert_eq!(
            inject(&faults, "mqtt.connect", Some("c")).await,
            Injected::Refuse
        );
        for _ in 0..3 {
            assert_eq!(
                inject(&faults, "mqtt.deliver", Some("c")).await,
                Injected::Pass
            );
        }
        // `*` is every management route, not MQTT; `mqtt.*` is every MQTT step.
        let mut all = FaultRule::new("*");
        all.drop_rate = 1.0;
        let faults = Faults::new(FaultConfig {
            seed: 1,
            rules: vec![all],
            rate_limit: None,
        })
        .unwrap();
        assert_eq!(inject(&faults, "mqtt.deliver", None).await, Injected::Pass);
        let mut mqtt = FaultRule::new("mqtt.*");
        mqtt.drop_rate = 1.0;
        faults
            .set_config(FaultConfig {
                seed: 1,
                rules: vec![mqtt],
                rate_limit: None,
            })
            .unwrap();
        assert_eq!(inject(&faults, "mqtt.deliver", None).await, Injected::Drop);
    }
}
