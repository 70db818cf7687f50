//! The platform write gate: the "still leader" token every platform write checks
//! (docs/architecture.md §9.8), and the decorator that applies it to a platform client.
//!
//! - [`WriteGate`] is always open without leader election. With it ([`WriteGate::leased`]) it
//!   is closed until the leader election (`super::leader`) extends it after a successful
//!   acquire or renew, to *the time that request was sent + the renew deadline*, and closed for
//!   good when the Lease is lost or released. Why that deadline keeps two replicas from writing
//!   at once is told in `super::leader`.
//! - [`WriteGate::guard`] wraps a [`Platform`] so that each write (`set_config_otau`,
//!   `add_identity_tag`, `upload_content`, `delete_content`, `register_package`) checks the gate just before it is
//!   sent and, when closed, fails with [`PlatformError::Unavailable`] without reaching the
//!   platform. Reads always pass: a follower may look, never write.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::otau::Manifest;
use crate::platform::{ContentInfo, ContentUpload, PackageRegistered, PackageRegistration, Tag};
use crate::platform::{
    CredentialCheck, IdentityPages, IdentityState, ListIdentities, Platform, PlatformError,
};

/// The "still leader" token every platform write checks. Without leader election it is
/// always open; with it, it is open only until the deadline the last renewal set.
#[derive(Clone, Default)]
pub struct WriteGate {
    leased: Option<Arc<Token>>,
}

struct Token {
    base: Instant,
    /// Microseconds after `base` until which writes are allowed; 0: not allowed.
    valid_until: AtomicU64,
}

impl std::fmt::Debug for WriteGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.leased {
            None => f.write_str("WriteGate(always open)"),
            Some(_) => write!(f, "WriteGate(leased, open: {})", self.may_write()),
        }
    }
}

impl WriteGate {
    /// A gate that is always open (no leader election).
    pub fn always_open() -> Self {
        WriteGate { leased: None }
    }

    /// A gate tied to a Lease, closed until the first successful acquire.
    pub fn leased() -> Self {
        WriteGate {
            leased: Some(Arc::new(Token {
                base: Instant::now(),
                valid_until: AtomicU64::new(0),
            })),
        }
    }

    /// Whether this replica may write to the platform now.
    pub fn may_write(&self) -> bool {
        match &self.leased {
            None => true,
            Some(token) => {
                let until = token.valid_until.load(Ordering::SeqCst);
                until != 0 && micros_since(token.base, Instant::now()) < until
            }
        }
    }

    /// Opens the gate until `until` (never moves the deadline back).
    pub(super) fn extend_to(&self, until: Instant) {
        if let Some(token) = &self.leased {
            // 0 means closed: a deadline at or before the token's creation opens nothing.
            let micros = micros_since(token.base, until);
            if micros > 0 {
                token.valid_until.fetch_max(micros, Ordering::SeqCst);
            }
        }
    }

    /// Closes the gate for good (lease lost or released).
    pub(super) fn revoke(&self) {
        if let Some(token) = &self.leased {
            token.valid_until.store(0, Ordering::SeqCst);
        }
    }

    /// Time left before the gate closes, if it is open.
    pub(super) fn remaining(&self) -> Option<Duration> {
        let token = self.leased.as_ref()?;
        let until = token.valid_until.load(Ordering::SeqCst);
        let now = micros_since(token.base, Instant::now());
        (until != 0 && now < until).then(|| Duration::from_micros(until - now))
    }

    /// `platform` with every write checked against this gate just before it is sent; the
    /// platform itself when the gate is always open.
    pub fn guard(&self, platform: Arc<dyn Platform>) -> Arc<dyn Platform> {
        match self.leased {
            None => platform,
            Some(_) => Arc::new(GuardedPlatform {
                inner: platform,
                gate: self.clone(),
            }),
        }
    }
}

fn micros_since(base: Instant, at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(base).as_micros()).unwrap_or(u64::MAX)
}

/// A platform client whose writes pass only while the [`WriteGate`] is open; reads pass always.
struct GuardedPlatform {
    inner: Arc<dyn Platform>,
    gate: WriteGate,
}

impl GuardedPlatform {
    fn check(&self, operation: &'static str) -> Result<(), PlatformError> {
        if self.gate.may_write() {
            Ok(())
        } else {
            Err(PlatformError::Unavailable {
                operation,
                reason: "not sent: this replica no longer holds the leader lease".to_string(),
            })
        }
    }
}

#[async_trait]
impl Platform for GuardedPlatform {
    fn connector_id(&self) -> &str {
        self.inner.connector_id()
    }

    async fn check_credentials(&self) -> Result<CredentialCheck, PlatformError> {
        self.inner.check_credentials().await
    }

    async fn check_exosense_credentials(&self) -> Result<bool, PlatformError> {
        self.inner.check_exosense_credentials().await
    }

    fn list_identities(&self, query: ListIdentities) -> IdentityPages {
        self.inner.list_identities(query)
    }

    async fn identity_state(&self, identity: &str) -> Result<IdentityState, PlatformError> {
        self.inner.identity_state(identity).await
    }

    async fn set_config_otau(
        &self,
        identity: &str,
        manifest: &Manifest,
    ) -> Result<(), PlatformError> {
        self.check("device2.state.set")?;
        self.inner.set_config_otau(identity, manifest).await
    }

    async fn add_identity_tag(&self, identity: &str, tag: &Tag) -> Result<bool, PlatformError> {
        self.check("device2.identity.tags")?;
        self.inner.add_identity_tag(identity, tag).await
    }

    async fn upload_content(&self, upload: ContentUpload) -> Result<(), PlatformError> {
        self.check("content.upload.form")?;
        self.inner.upload_content(upload).await
    }

    async fn content_info(&self, id: &str) -> Result<ContentInfo, PlatformError> {
        self.inner.content_info(id).await
    }

    async fn list_content(&self) -> Result<Vec<ContentInfo>, PlatformError> {
        self.inner.list_content().await
    }

    async fn delete_content(&self, id: &str) -> Result<(), PlatformError> {
        self.check("content.delete")?;
        self.inner.delete_content(id).await
    }

    async fn register_package(
        &self,
        package: &PackageRegistration,
    ) -> Result<PackageRegistered, PlatformError> {
        self.check("content.register")?;
        self.inner.register_package(package).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use futures::StreamExt;

    use super::*;
    use crate::platform::{ConnectorSettings, IdentityPage, RegistrationPath};

    #[test]
    fn the_write_gate_opens_only_until_its_deadline() {
        assert!(WriteGate::always_open().may_write());
        assert!(WriteGate::default().may_write(), "no election: always open");
        let gate = WriteGate::leased();
        assert!(!gate.may_write(), "closed before the first acquire");
        gate.extend_to(Instant::now() + Duration::from_secs(3600));
        assert!(gate.may_write());
        assert!(
            gate.remaining()
                .is_some_and(|r| r > Duration::from_secs(3000))
        );
        gate.revoke();
        assert!(!gate.may_write(), "closed once revoked");
        assert_eq!(gate.remaining(), None);
        let expired = WriteGate::leased();
        let past = Instant::now()
            .checked_sub(Duration::from_millis(5))
            .expect("an instant 5ms ago");
        expired.extend_to(past);
        assert!(
            !expired.may_write(),
            "a deadline in the past keeps it closed"
        );
        let clone = gate.clone();
        gate.extend_to(Instant::now() + Duration::from_secs(60));
        assert!(clone.may_write(), "clones share the token");
    }

    #[test]
    fn a_later_renewal_never_moves_the_deadline_back() {
        let gate = WriteGate::leased();
        gate.extend_to(Instant::now() + Duration::from_secs(3600));
        gate.extend_to(Instant::now() + Duration::from_secs(1));
        assert!(
            gate.remaining()
                .is_some_and(|r| r > Duration::from_secs(3000)),
            "the earlier, later deadline stands"
        );
        assert_eq!(WriteGate::always_open().remaining(), None);
        assert!(
            format!("{:?}", WriteGate::always_open()).contains("always open"),
            "Debug says which kind of gate"
        );
        assert!(format!("{gate:?}").contains("open: true"));
    }

    /// A platform that records which operations reached it and answers each with success.
    #[derive(Default)]
    struct Recording {
        calls: Mutex<Vec<&'static str>>,
    }

    impl Recording {
        fn record(&self, operation: &'static str) {
            self.calls
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(operation);
        }

        fn calls(&self) -> Vec<&'static str> {
            self.calls.lock().unwrap_or_else(|e| e.into_inner()).clone()
        }
    }

    #[async_trait]
    impl Platform for Recording {
        fn connector_id(&self) -> &str {
            "c1"
        }

        async fn check_credentials(&self) -> Result<CredentialCheck, PlatformError> {
            self.record("check_credentials");
            Ok(CredentialCheck {
                email: "ops@example.com".into(),
                ttl: Duration::from_secs(60),
                settings: ConnectorSettings::default(),
            })
        }

        async fn check_exosense_credentials(&self) -> Result<bool, PlatformError> {
            self.record("check_exosense_credentials");
            Ok(true)
        }

        fn list_identities(&self, _query: ListIdentities) -> IdentityPages {
            self.record("list_identities");
            futures::stream::iter([Ok(IdentityPage::default())]).boxed()
        }

        async fn identity_state(&self, _identity: &str) -> Result<IdentityState, PlatformError> {
            self.record("identity_state");
            Ok(IdentityState::default())
        }

        async fn set_config_otau(
            &self,
            _identity: &str,
            _manifest: &Manifest,
        ) -> Result<(), PlatformError> {
            self.record("set_config_otau");
            Ok(())
        }

        async fn add_identity_tag(
            &self,
            _identity: &str,
            _tag: &Tag,
        ) -> Result<bool, PlatformError> {
            self.record("add_identity_tag");
            Ok(true)
        }

        async fn upload_content(&self, _upload: ContentUpload) -> Result<(), PlatformError> {
            self.record("upload_content");
            Ok(())
        }

        async fn content_info(&self, id: &str) -> Result<ContentInfo, PlatformError> {
            self.record("content_info");
            Ok(ContentInfo {
                id: id.to_string(),
                ..ContentInfo::default()
            })
        }

        async fn list_content(&self) -> Result<Vec<ContentInfo>, PlatformError> {
            self.record("list_content");
            Ok(Vec::new())
        }

        async fn delete_content(&self, _id: &str) -> Result<(), PlatformError> {
            self.record("delete_content");
            Ok(())
        }

        async fn register_package(
            &self,
            package: &PackageRegistration,
        ) -> Result<PackageRegistered, PlatformError> {
            self.record("register_package");
            Ok(PackageRegistered {
                content_id: package.content_id(),
                path: RegistrationPath::ContentRest,
            })
        }
    }

    fn manifest() -> Manifest {
        Manifest::url_list("1.0.2", "Firmware", "", vec!["fw.bin".into()])
    }

    fn upload() -> ContentUpload {
        ContentUpload {
            id: "fw.bin".into(),
            content_type: "application/octet-stream".into(),
            length: 0,
            sha256: String::new(),
            tags: Default::default(),
            body: Box::pin(tokio::io::empty()),
        }
    }

    fn registration() -> PackageRegistration {
        PackageRegistration {
            slug: "demo-fw".into(),
            author: "ops".into(),
            product: "c1".into(),
            manifest: manifest(),
            total_devices: 1,
            device_tags: Vec::new(),
        }
    }

    /// Calls every write of `platform`; the operation each refusal names, or `None` for a write
    /// that passed.
    async fn writes(platform: &dyn Platform) -> Vec<Option<&'static str>> {
        let refused = |r: Result<(), PlatformError>| match r {
            Ok(()) => None,
            Err(PlatformError::Unavailable { operation, reason }) => {
                assert!(reason.contains("leader lease"), "{reason}");
                Some(operation)
            }
            Err(other) => panic!("a refused write is Unavailable, not {other:?}"),
        };
        vec![
            refused(platform.set_config_otau("dev-1", &manifest()).await),
            refused(
                platform
                    .add_identity_tag("dev-1", &Tag::new("otau-installed", "k"))
                    .await
                    .map(|_| ()),
            ),
            refused(platform.upload_content(upload()).await),
            refused(platform.delete_content("fw.bin").await),
            refused(platform.register_package(&registration()).await.map(|_| ())),
        ]
    }

    /// Calls every read of `platform`, each expected to succeed.
    async fn reads(platform: &dyn Platform) {
        platform.check_credentials().await.expect("read passes");
        platform
            .check_exosense_credentials()
            .await
            .expect("read passes");
        let pages: Vec<_> = platform
            .list_identities(ListIdentities::default())
            .collect()
            .await;
        assert_eq!(pages.len(), 1);
        platform.identity_state("dev-1").await.expect("read passes");
        platform.content_info("fw.bin").await.expect("read passes");
        platform.list_content().await.expect("read passes");
    }

    const READS: [&str; 6] = [
        "check_credentials",
        "check_exosense_credentials",
        "list_identities",
        "identity_state",
        "content_info",
        "list_content",
    ];
    const WRITES: [&str; 5] = [
        "set_config_otau",
        "add_identity_tag",
        "upload_content",
        "delete_content",
        "register_package",
    ];

    #[test]
    fn an_always_open_gate_hands_the_platform_back_unwrapped() {
        let inner: Arc<dyn Platform> = Arc::new(Recording::default());
        let guarded = WriteGate::always_open().guard(inner.clone());
        assert!(Arc::ptr_eq(&inner, &guarded));
    }

    #[tokio::test]
    async fn a_closed_gate_refuses_every_write_before_it_is_sent_and_passes_reads() {
        let inner = Arc::new(Recording::default());
        let gate = WriteGate::leased();
        let guarded = gate.guard(inner.clone());
        assert_eq!(guarded.connector_id(), "c1");

        assert_eq!(
            writes(guarded.as_ref()).await,
            vec![
                Some("device2.state.set"),
                Some("device2.identity.tags"),
                Some("content.upload.form"),
                Some("content.delete"),
                Some("content.register"),
            ],
            "closed before the first acquire: each write names its operation"
        );
        reads(guarded.as_ref()).await;
        assert_eq!(
            inner.calls(),
            READS,
            "no refused write reached the platform"
        );
    }

    #[tokio::test]
    async fn an_open_gate_lets_writes_through_until_it_is_revoked() {
        let inner = Arc::new(Recording::default());
        let gate = WriteGate::leased();
        let guarded = gate.guard(inner.clone());
        gate.extend_to(Instant::now() + Duration::from_secs(3600));
        assert_eq!(writes(guarded.as_ref()).await, vec![None; 5]);
        assert_eq!(inner.calls(), WRITES);

        gate.revoke();
        assert!(
            writes(guarded.as_ref()).await.iter().all(Option::is_some),
            "the guard shares the gate: revoking it closes the guarded client"
        );
        assert_eq!(inner.calls(), WRITES, "nothing more reached the platform");
    }
}
