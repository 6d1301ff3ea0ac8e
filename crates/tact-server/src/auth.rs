//! Who calls and what they may do: the clients file (API keys as SHA-256 hashes,
//! scopes, rate limits), the caller's identity from `authorization: Bearer <key>` or a
//! client certificate, and the scope each method needs.
//!
//! Parsing, hashing and the scope checks do no I/O; [`ClientsFile::load`] reads a file.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tonic::Status;

/// What a client may do. Each method of `tact.v1.ContactPolicy` needs one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Decide, DecideBatch, DecideStream.
    Decide,
    /// Authorize.
    Authorize,
    /// RecordEvents.
    Record,
    /// GetCustomer, GetStatus, GetDecision, ListDecisions.
    Read,
    /// ListDeadLetters (and later operations).
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 5] = [
        Scope::Decide,
        Scope::Authorize,
        Scope::Record,
        Scope::Read,
        Scope::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Decide => "decide",
            Scope::Authorize => "authorize",
            Scope::Record => "record",
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = ClientsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s.trim())
            .ok_or_else(|| {
                ClientsError::Invalid(format!(
                    "unknown scope `{s}` (decide, authorize, record, read, admin)"
                ))
            })
    }
}

/// A set of scopes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Scopes(u8);

impl Scopes {
    pub fn all() -> Scopes {
        Scopes(Scope::ALL.iter().fold(0, |acc, s| acc | s.bit()))
    }

    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        Scopes(iter.into_iter().fold(0, |acc, s| acc | s.bit()))
    }
}

/// Per-client rate limits; unset: unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimits {
    /// Decisions per second (a `DecideBatch` of N proposals costs N; `Authorize` costs 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decisions_per_second: Option<u32>,
    /// Events per second (`RecordEvents` with N events costs N).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events_per_second: Option<u32>,
    /// How many may be spent at once (the bucket size); unset: one second's worth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

impl RateLimits {
    /// Each field of `self`, else the one of `defaults`.
    pub fn or(self, defaults: RateLimits) -> RateLimits {
        RateLimits {
            decisions_per_second: self.decisions_per_second.or(defaults.decisions_per_second),
            events_per_second: self.events_per_second.or(defaults.events_per_second),
            burst: self.burst.or(defaults.burst),
        }
    }
}

/// One client as written in the clients file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientEntry {
    pub id: String,
    /// The SHA-256 of the API key, hex. The key itself is never stored.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key_sha256: String,
    pub scopes: Vec<Scope>,
    #[serde(flatten)]
    pub limits: RateLimits,
}

/// The clients file (TOML): `[defaults]` rate limits and `[[clients]]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientsFile {
    #[serde(default)]
    pub defaults: RateLimits,
    #[serde(default)]
    pub clients: Vec<ClientEntry>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientsError {
    #[error("cannot read the clients file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("cannot write the clients file {path}: {source}")]
    Write { path: String, source: std::io::Error },
    #[error("clients file {path}: {why}")]
    Parse { path: String, why: String },
    #[error("{0}")]
    Invalid(String),
}

/// The source an event recorded by tact itself carries; no client may be called that.
const RESERVED_ID: &str = "tact";

/// Client ids are the identity tact records: short, printable, no `/`.
pub fn check_client_id(id: &str) -> Result<(), ClientsError> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@' | ':');
    if id.is_empty() || id.len() > 128 || !id.chars().all(ok_char) {
        return Err(ClientsError::Invalid(format!(
            "client id `{id}`: 1 to 128 characters out of letters, digits and - _ . @ :"
        )));
    }
    if id == RESERVED_ID || id.starts_with("tact-") {
        return Err(ClientsError::Invalid(format!(
            "client id `{id}` is reserved for tact's own events"
        )));
    }
    Ok(())
}

impl ClientsFile {
    pub fn parse(text: &str) -> Result<ClientsFile, ClientsError> {
        let file: ClientsFile =
            toml::from_str(text).map_err(|e| ClientsError::Invalid(e.message().to_owned()))?;
        file.validate()?;
        Ok(file)
    }

    pub fn load(path: &Path) -> Result<ClientsFile, ClientsError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => {
                return Err(ClientsError::Read {
                    path: path.display().to_string(),
                    source,
                });
            }
        };
        Self::parse(&text).map_err(|e| ClientsError::Parse {
            path: path.display().to_string(),
            why: e.to_string(),
        })
    }

    pub fn validate(&self) -> Result<(), ClientsError> {
        let mut ids = HashSet::new();
        for (i, c) in self.clients.iter().enumerate() {
            let at = |why: String| ClientsError::Invalid(format!("clients[{i}] ({}): {why}", c.id));
            check_client_id(&c.id).map_err(|e| at(e.to_string()))?;
            if !ids.insert(c.id.as_str()) {
                return Err(at("a second client with this id".into()));
            }
            if c.key_sha256.is_empty() {
                // A client known only by its certificate (mTLS).
            } else if parse_hash(&c.key_sha256).is_none() {
                return Err(at("key_sha256: 64 hex digits expected".into()));
            }
            let limits = c.limits.or(self.defaults);
            for (name, v) in [
                ("decisions_per_second", limits.decisions_per_second),
                ("events_per_second", limits.events_per_second),
                ("burst", limits.burst),
            ] {
                if v == Some(0) {
                    return Err(at(format!("{name}: must be at least 1")));
                }
            }
        }
        Ok(())
    }

    /// The file's text, as `tact clients` writes it.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }
}

/// The text `tact clients add` appends for a new client.
pub fn entry_toml(entry: &ClientEntry) -> String {
    let file = ClientsFile {
        defaults: RateLimits::default(),
        clients: vec![entry.clone()],
    };
    let text = toml::to_string(&file).unwrap_or_default();
    // Only the `[[clients]]` table (defaults are empty and not written).
    match text.find("[[clients]]") {
        Some(i) => text[i..].to_owned(),
        None => text,
    }
}

fn parse_hash(hex_text: &str) -> Option<[u8; 32]> {
    let bytes = hex::decode(hex_text.trim()).ok()?;
    bytes.try_into().ok()
}

/// The SHA-256 of an API key, hex (what the clients file stores).
pub fn key_sha256(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A new random API key: `tact_` and 32 random bytes, hex.
pub fn generate_key() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("tact_{}", hex::encode(bytes))
}

/// Equal without an early exit, so the time taken says nothing about where they differ.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Who is calling, once authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub id: Arc<str>,
    pub scopes: Scopes,
    pub limits: RateLimits,
    /// False for the one shared client of unauthenticated mode.
    pub authenticated: bool,
}

impl Caller {
    /// Ok if the caller has `scope`, else PERMISSION_DENIED naming it.
    pub fn require(&self, scope: Scope) -> Result<(), Status> {
        if self.scopes.contains(scope) {
            Ok(())
        } else {
            Err(Status::permission_denied(format!(
                "client `{}` lacks the scope `{scope}` this method needs",
                self.id
            )))
        }
    }
}

#[derive(Debug)]
struct Client {
    caller: Caller,
    hash: Option<[u8; 32]>,
}

/// The clients in force, as loaded from a [`ClientsFile`].
#[derive(Debug, Default)]
pub struct Clients {
    clients: Vec<Client>,
    defaults: RateLimits,
}

impl Clients {
    pub fn new(file: &ClientsFile) -> Result<Clients, ClientsError> {
        file.validate()?;
        let clients = file
            .clients
            .iter()
            .map(|c| Client {
                caller: Caller {
                    id: c.id.as_str().into(),
                    scopes: c.scopes.iter().copied().collect(),
                    limits: c.limits.or(file.defaults),
                    authenticated: true,
                },
                hash: parse_hash(&c.key_sha256),
            })
            .collect();
        Ok(Clients {
            clients,
            defaults: file.defaults,
        })
    }

    pub fn len(&self) -> usize {
        self.clients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// The client whose key this is. Every client's hash is compared, each in constant time.
    pub fn by_key(&self, key: &str) -> Option<&Caller> {
        let hash: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let mut found = None;
        for c in &self.clients {
            if let Some(h) = &c.hash
                && constant_time_eq(h, &hash)
            {
                found = Some(&c.caller);
            }
        }
        found
    }

    pub fn by_id(&self, id: &str) -> Option<&Caller> {
        self.clients
            .iter()
            .find(|c| &*c.caller.id == id)
            .map(|c| &c.caller)
    }
}

/// How callers are identified.
#[derive(Clone, Debug, Default)]
pub struct AuthOptions {
    /// The clients file; `None`: no API keys.
    pub clients_file: Option<PathBuf>,
    /// Serve without authentication on a non-loopback address (no clients file, no mTLS).
    pub allow_unauthenticated: bool,
    /// The rate limits of the one shared client of unauthenticated mode (unset: none).
    pub unauthenticated_limits: RateLimits,
}

/// The id of the one shared client of unauthenticated mode.
pub const LOCAL_CLIENT: &str = "local";

/// The identity a verified client certificate gives (its subject CN, else first DNS SAN).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerIdentity(pub Arc<str>);

/// Identifies callers: API keys from the clients file (reloadable), client certificates
/// (mTLS), or, with neither, one shared unauthenticated client.
#[derive(Debug)]
pub struct Authenticator {
    clients_file: Option<PathBuf>,
    clients: RwLock<Arc<Clients>>,
    mtls: bool,
    open: Caller,
}

impl Authenticator {
    /// Loads the clients file (a missing file has no clients yet).
    pub fn new(opts: &AuthOptions, mtls: bool) -> Result<Authenticator, ClientsError> {
        let clients = match &opts.clients_file {
            Some(path) => Clients::new(&ClientsFile::load(path)?)?,
            None => Clients::default(),
        };
        Ok(Authenticator {
            clients_file: opts.clients_file.clone(),
            clients: RwLock::new(Arc::new(clients)),
            mtls,
            open: Caller {
                id: LOCAL_CLIENT.into(),
                scopes: Scopes::all(),
                limits: opts.unauthenticated_limits,
                authenticated: false,
            },
        })
    }

    /// Unauthenticated: no clients file and no client certificates.
    pub fn is_open(&self) -> bool {
        self.clients_file.is_none() && !self.mtls
    }

    pub fn clients(&self) -> Arc<Clients> {
        Arc::clone(&self.clients.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Re-reads the clients file. On error (a missing file included) the clients in
    /// force stay.
    pub fn reload(&self) -> Result<usize, ClientsError> {
        let Some(path) = &self.clients_file else {
            return Ok(0);
        };
        // A file that disappeared is a mistake, not "no clients": keep the ones in force.
        if let Err(source) = std::fs::metadata(path) {
            return Err(ClientsError::Read {
                path: path.display().to_string(),
                source,
            });
        }
        let clients = Clients::new(&ClientsFile::load(path)?)?;
        let n = clients.len();
        *self.clients.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(clients);
        Ok(n)
    }

    /// The caller of a request: its API key, else its client certificate, else (only in
    /// unauthenticated mode) the shared client. UNAUTHENTICATED otherwise.
    pub fn identify(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        peer: Option<&PeerIdentity>,
    ) -> Result<Caller, Status> {
        if self.is_open() {
            return Ok(self.open.clone());
        }
        let clients = self.clients();
        if let Some(value) = metadata.get("authorization") {
            let key = value.to_str().ok().and_then(bearer_token).ok_or_else(|| {
                Status::unauthenticated("authorization metadata: `Bearer <api key>` expected")
            })?;
            return clients
                .by_key(key)
                .cloned()
                .ok_or_else(|| Status::unauthenticated("unknown api key"));
        }
        if let Some(PeerIdentity(name)) = peer {
            if self.clients_file.is_none() {
                // mTLS alone: every certificate the CA signed is a client with every scope.
                return Ok(Caller {
                    id: Arc::clone(name),
                    scopes: Scopes::all(),
                    limits: clients.defaults,
                    authenticated: true,
                });
            }
            return clients.by_id(name).cloned().ok_or_else(|| {
                Status::unauthenticated(format!(
                    "the client certificate names `{name}`, which is not a client in the clients file"
                ))
            });
        }
        Err(Status::unauthenticated(
            "no api key: send `authorization: Bearer <api key>` metadata",
        ))
    }
}

/// The credentials of an `authorization` value of the `Bearer` scheme (its name in any
/// case, as RFC 7235 has it), trimmed.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, rest) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
[defaults]
decisions_per_second = 100
burst = 10

[[clients]]
id = "crm"
key_sha256 = "KEYHASH"
scopes = ["decide", "authorize"]
decisions_per_second = 5

[[clients]]
id = "ingest"
key_sha256 = "OTHERHASH"
scopes = ["record"]
events_per_second = 1000
"#;

    fn file() -> String {
        FILE.replace("OTHERHASH", &key_sha256("other-key"))
            .replace("KEYHASH", &key_sha256("crm-key"))
    }

    fn auth(text: &str) -> Authenticator {
        let a = Authenticator {
            clients_file: Some(PathBuf::from("clients.toml")),
            clients: RwLock::new(Arc::new(
                Clients::new(&ClientsFile::parse(text).unwrap()).unwrap(),
            )),
            mtls: false,
            open: Caller {
                id: LOCAL_CLIENT.into(),
                scopes: Scopes::all(),
                limits: RateLimits::default(),
                authenticated: false,
            },
        };
        assert!(!a.is_open());
        a
    }

    fn bearer(key: &str) -> tonic::metadata::MetadataMap {
        let mut m = tonic::metadata::MetadataMap::new();
        m.insert("authorization", format!("Bearer {key}").parse().unwrap());
        m
    }

    #[test]
    fn keys_identify_clients_with_their_scopes_and_limits() {
        let a = auth(&file());
        let crm = a.identify(&bearer("crm-key"), None).unwrap();
        assert_eq!(&*crm.id, "crm");
        assert!(crm.scopes.contains(Scope::Decide) && !crm.scopes.contains(Scope::Record));
        assert_eq!(crm.limits.decisions_per_second, Some(5));
        assert_eq!(crm.limits.burst, Some(10), "from [defaults]");
        let ingest = a.identify(&bearer("other-key"), None).unwrap();
        assert_eq!(ingest.limits.decisions_per_second, Some(100));
        let denied = ingest.require(Scope::Decide).unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        assert!(denied.message().contains("`decide`"), "{}", denied.message());
    }

    #[test]
    fn missing_malformed_and_unknown_keys_are_unauthenticated() {
        let a = auth(&file());
        let none = a
            .identify(&tonic::metadata::MetadataMap::new(), None)
            .unwrap_err();
        assert_eq!(none.code(), tonic::Code::Unauthenticated);
        assert_eq!(
            a.identify(&bearer("crm-key2"), None).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        for scheme in ["bearer", "BEARER", "BeArEr"] {
            let mut m = tonic::metadata::MetadataMap::new();
            m.insert("authorization", format!("{scheme} crm-key").parse().unwrap());
            assert_eq!(&*a.identify(&m, None).unwrap().id, "crm", "{scheme}");
        }
        let mut basic = tonic::metadata::MetadataMap::new();
        basic.insert("authorization", "Basic abc".parse().unwrap());
        assert_eq!(
            a.identify(&basic, None).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
    }

    #[test]
    fn certificates_name_clients_of_the_file() {
        let a = auth(&file());
        let peer = PeerIdentity("crm".into());
        assert_eq!(&*a.identify(&Default::default(), Some(&peer)).unwrap().id, "crm");
        let stranger = PeerIdentity("stranger".into());
        assert_eq!(
            a.identify(&Default::default(), Some(&stranger))
                .unwrap_err()
                .code(),
            tonic::Code::Unauthenticated
        );
    }

    #[test]
    fn bad_files_are_refused_naming_the_client() {
        for (text, needle) in [
            ("[[clients]]\nid = \"tact\"\nscopes = []\n", "reserved"),
            ("[[clients]]\nid = \"a b\"\nscopes = []\n", "client id"),
            (
                "[[clients]]\nid = \"a\"\nkey_sha256 = \"xyz\"\nscopes = []\n",
                "64 hex",
            ),
            (
                "[[clients]]\nid = \"a\"\nscopes = [\"root\"]\n",
                "unknown variant",
            ),
            (
                "[[clients]]\nid = \"a\"\nscopes = []\n[[clients]]\nid = \"a\"\nscopes = []\n",
                "second client",
            ),
            ("[[clients]]\nid = \"a\"\nscopes = []\nburst = 0\n", "burst"),
        ] {
            let e = ClientsFile::parse(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn an_added_entry_round_trips() {
        let entry = ClientEntry {
            id: "dialer".into(),
            key_sha256: key_sha256("k"),
            scopes: vec![Scope::Decide, Scope::Authorize],
            limits: RateLimits {
                decisions_per_second: Some(50),
                events_per_second: None,
                burst: Some(20),
            },
        };
        let text = format!("{}\n{}", file(), entry_toml(&entry));
        let parsed = ClientsFile::parse(&text).unwrap();
        assert_eq!(parsed.clients.last(), Some(&entry));
        assert_eq!(ClientsFile::parse(&parsed.to_toml()).unwrap(), parsed);
        let key = generate_key();
        assert!(key.starts_with("tact_") && key.len() == 69);
        assert_ne!(key, generate_key());
    }
}
