//! The hostile-request run: many requests an attacker (or a buggy client)
//! would send, against a real service and database, half of them with
//! valid tokens of real members of a real conversation. Nothing may be
//! answered with a 5xx, nothing may make the service panic or die, and no
//! conversation may change except by what the service acknowledged.
//!
//! Requests are drawn from a seeded generator (the same seed sends the
//! same requests): mutated JSON bodies of every procedure (the fuzz
//! crate's mutator over bodies with the conversation's real ids and MLS
//! bytes), real MLS bytes mutated inside otherwise valid bodies, mutated
//! query strings, odd strings (huge, NUL, lone surrogate escapes, bad
//! base64), unknown methods and paths, wrong verbs, bad and huge headers,
//! bad tokens, and malformed HTTP written straight to a socket.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use catbird_generated::lexicons::blue::catbird::mls::ROUTES;
use catbird_generated::runtime::Did;
use catbird_generated::runtime::xrpc::{MethodKind, Route, reqwest};
use catbird_mls_client::{Change, LocalIdentity, mint_token, to_bytes};
use catbird_mls_fuzz::Shape;
use catbird_mls_fuzz::mutate::Mutator;
use openmls::prelude::{GroupId, MlsMessageOut};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::env::Database;
use crate::error::BenchError;
use crate::fleet::{Fleet, User};

/// Requests in flight at once.
const CONCURRENCY: usize = 16;
const TOKEN_LIFETIME: Duration = Duration::from_secs(60 * 60);

/// What the run found.
pub struct Summary {
    pub requests: usize,
    pub with_valid_tokens: usize,
    pub statuses: BTreeMap<String, usize>,
    pub by_kind: BTreeMap<&'static str, BTreeMap<String, usize>>,
    pub server_errors: usize,
    /// The 5xx answers (not 501): request kind, method, body.
    pub server_error_answers: Vec<String>,
    /// The service's ERROR log lines (their causes), distinct, at most 10.
    pub logged_errors: Vec<String>,
    pub panics: usize,
    pub alive: bool,
    pub conversation: String,
    pub unchanged: bool,
    pub elapsed: Duration,
}

impl Summary {
    pub fn passed(&self) -> bool {
        self.server_errors == 0 && self.panics == 0 && self.alive && self.unchanged
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "hostile run: {} requests ({} with valid tokens of real members), {CONCURRENCY} at a time, {:.1} s",
            self.requests,
            self.with_valid_tokens,
            self.elapsed.as_secs_f64()
        )?;
        let statuses: Vec<String> = self
            .statuses
            .iter()
            .map(|(s, n)| format!("{s}: {n}"))
            .collect();
        writeln!(f, "statuses: {}", statuses.join(", "))?;
        writeln!(f, "by kind of request:")?;
        for (kind, statuses) in &self.by_kind {
            let total: usize = statuses.values().sum();
            let statuses: Vec<String> = statuses.iter().map(|(s, n)| format!("{s} {n}")).collect();
            writeln!(f, "  {kind:<22} {total:>6}  {}", statuses.join(", "))?;
        }
        writeln!(
            f,
            "5xx (besides 501 MethodNotImplemented, the XRPC answer to an unknown method): {}",
            self.server_errors
        )?;
        for answer in &self.server_error_answers {
            writeln!(f, "  {answer}")?;
        }
        if !self.logged_errors.is_empty() {
            writeln!(f, "the service logged (ERROR lines, distinct):")?;
            for line in &self.logged_errors {
                writeln!(f, "  {line}")?;
            }
        }
        writeln!(
            f,
            "panics in the service log: {}; service alive and healthy after the run: {}",
            self.panics,
            if self.alive { "yes" } else { "NO" }
        )?;
        write!(f, "conversation: {}", self.conversation)
    }
}

/// The members and their conversation, and real MLS bytes made for it
/// (never submitted as they are).
struct Setup {
    url: String,
    /// The service's DID (the tokens' `aud`).
    audience: Did,
    convo: String,
    members: Vec<User>,
    outsider: User,
    devices: Vec<String>,
    /// (field name, real bytes) per procedure input that carries MLS bytes.
    mls: BTreeMap<&'static str, Vec<u8>>,
}

/// Runs `requests` hostile requests against the service at `url` (whose
/// log is `log`) and checks the conversation it sets up in `database`.
pub async fn run(
    fleet: &Fleet,
    database: &Database,
    url: &str,
    log: &Path,
    requests: usize,
    seed: u64,
) -> Result<Summary, BenchError> {
    let setup = Arc::new(set_up(fleet, url).await?);
    let before = snapshot(database, &setup.convo).await?;

    let started = Instant::now();
    // A connection per request: a hostile client does not wait for its
    // connection to be reusable, and a reused connection the service has
    // just closed (after refusing a body unread) would be our error.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|error| BenchError::Setup(format!("an HTTP client: {error}")))?;
    let mut generator = Generator::new(seed, setup.clone());
    let planned: Vec<Planned> = (0..requests).map(|index| generator.next(index)).collect();
    let with_valid_tokens = planned.iter().filter(|p| p.valid_token).count();
    let address = url.trim_start_matches("http://").to_owned();
    let results: Vec<(&'static str, &'static str, Answer)> = {
        use futures_util::StreamExt as _;
        futures_util::stream::iter(planned)
            .map(|planned| {
                let http = http.clone();
                let url = url.to_owned();
                let address = address.clone();
                async move {
                    let answer = send(&http, &url, &address, &planned.request).await;
                    (planned.kind, planned.request.nsid(), answer)
                }
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await
    };
    let elapsed = started.elapsed();

    let mut summary = Summary {
        requests,
        with_valid_tokens,
        statuses: BTreeMap::new(),
        by_kind: BTreeMap::new(),
        server_errors: 0,
        server_error_answers: Vec::new(),
        logged_errors: Vec::new(),
        panics: 0,
        alive: false,
        conversation: String::new(),
        unchanged: false,
        elapsed,
    };
    let mut acknowledged = Acknowledged::default();
    for (kind, nsid, answer) in results {
        let status = answer.status;
        // 501 MethodNotImplemented is the XRPC answer to an unknown method.
        if status.starts_with('5') && status != "501" {
            summary.server_errors += 1;
            summary
                .server_error_answers
                .push(format!("{status} {kind} {nsid}: {}", answer.body));
        }
        if let Some(seq) = answer.seq {
            acknowledged.record(nsid, seq);
        }
        *summary.statuses.entry(status.clone()).or_default() += 1;
        *summary
            .by_kind
            .entry(kind)
            .or_default()
            .entry(status)
            .or_default() += 1;
    }
    let log = std::fs::read_to_string(log).unwrap_or_default();
    summary.panics = log.matches("panicked").count();
    let mut logged_errors = BTreeSet::new();
    for line in log.lines().filter(|line| line.contains("ERROR")) {
        // Without the timestamp, so repeats of one cause are one line.
        let cause = line
            .split_once("ERROR")
            .map_or(line, |(_, rest)| rest)
            .trim();
        logged_errors.insert(cause.chars().take(300).collect::<String>());
    }
    summary.logged_errors = logged_errors.into_iter().take(10).collect();
    summary.alive = http
        .get(format!("{url}/xrpc/_health"))
        .send()
        .await
        .is_ok_and(|response| response.status().is_success());
    let after = snapshot(database, &setup.convo).await?;
    let (unchanged, description) = compare(&before, &after, &acknowledged);
    summary.unchanged = unchanged;
    summary.conversation = description;
    Ok(summary)
}

async fn set_up(fleet: &Fleet, url: &str) -> Result<Setup, BenchError> {
    let alice = fleet.user()?;
    let bob = fleet.user()?;
    let carol = fleet.user()?;
    let mut alice_phone = alice.device("phone", url)?;
    let mut bob_phone = bob.device("phone", url)?;
    let mut carol_phone = carol.device("phone", url)?;
    for device in [&mut alice_phone, &mut bob_phone, &mut carol_phone] {
        device.publish_key_packages(2).await?;
    }
    let convo = alice_phone.create_convo("hostile").await?;
    alice_phone
        .add(&convo, std::slice::from_ref(bob.did()))
        .await?;
    bob_phone.join_from_welcome(&convo).await?;
    alice_phone.send(&convo, "before the run").await?;
    bob_phone.sync(&convo).await?;

    // Real inputs for this conversation, staged and discarded.
    let wire = |message: MlsMessageOut| to_bytes(&message).map(|bytes| bytes.0);
    let carol_package = carol_phone.installation().key_package(false)?;
    let add = alice_phone.prepare(&convo, Change::Add(vec![carol_package.clone()]))?;
    alice_phone.conclude(&convo, None)?;
    let update = alice_phone.prepare(&convo, Change::SelfUpdate)?;
    alice_phone.conclude(&convo, None)?;
    let mut group = alice_phone.group(&convo)?;
    let ciphertext = alice_phone
        .installation()
        .encrypt(&mut group, b"hostile")?
        .0;
    let mut bob_group = bob_phone.group(&convo)?;
    let leave = bob_group
        .leave_group(
            bob_phone.installation().provider(),
            bob_phone.installation().signer(),
        )
        .map_err(|error| BenchError::Setup(format!("a leave proposal: {error}")))?;
    let fresh_group = carol_phone
        .installation()
        .create_group(&GroupId::from_slice(b"hostile fresh group"))?;
    let fresh_group_info = wire(carol_phone.installation().group_info(&fresh_group, true)?)?;
    let mls = BTreeMap::from([
        ("commit", update.commit.0),
        ("addCommit", add.commit.0),
        ("welcome", add.welcome.map(|w| w.0).unwrap_or_default()),
        ("groupInfo", update.group_info.0),
        ("ciphertext", ciphertext),
        ("proposal", wire(leave)?),
        ("keyPackage", wire(MlsMessageOut::from(carol_package))?),
        ("createGroupInfo", fresh_group_info),
    ]);
    Ok(Setup {
        url: url.to_owned(),
        audience: fleet.audience.clone(),
        devices: vec![
            alice_phone.id().to_string(),
            bob_phone.id().to_string(),
            carol_phone.id().to_string(),
        ],
        convo,
        members: vec![alice, bob],
        outsider: carol,
        mls,
    })
}

/// A request as planned (sent later, concurrently).
enum Request {
    Http {
        method: reqwest::Method,
        nsid: &'static str,
        path: String,
        headers: Vec<(String, Vec<u8>)>,
        body: Option<Vec<u8>>,
    },
    /// Bytes written to a fresh connection as they are.
    Raw(Vec<u8>),
}

impl Request {
    fn nsid(&self) -> &'static str {
        match self {
            Self::Http { nsid, .. } => nsid,
            Self::Raw(_) => "",
        }
    }
}

/// A drawn HTTP request: its kind (for the summary), verb, path and
/// query, headers, body.
type Drawn = (
    &'static str,
    reqwest::Method,
    String,
    Vec<(String, Vec<u8>)>,
    Option<Vec<u8>>,
);

struct Planned {
    kind: &'static str,
    valid_token: bool,
    request: Request,
}

struct Generator {
    rng: fastrand::Rng,
    mutator: Mutator,
    setup: Arc<Setup>,
}

impl Generator {
    fn new(seed: u64, setup: Arc<Setup>) -> Self {
        let dictionary = ROUTES
            .iter()
            .flat_map(|route| {
                route
                    .params
                    .iter()
                    .map(|p| p.name)
                    .chain(route.input_fields.iter().copied())
            })
            .map(|word| word.as_bytes().to_vec())
            .collect();
        Self {
            rng: fastrand::Rng::with_seed(seed),
            mutator: Mutator::new(seed, dictionary),
            setup,
        }
    }

    /// The `index`th request: even ones carry a valid token of a real user
    /// (a member, or the outsider) for the method they call.
    fn next(&mut self, index: usize) -> Planned {
        let valid_token = index.is_multiple_of(2);
        let route = ROUTES[self.rng.usize(..ROUTES.len())];
        // Malformed HTTP carries no token: only odd requests are drawn from it.
        let choice = if valid_token {
            self.rng.u8(0..9)
        } else {
            self.rng.u8(0..10)
        };
        let (kind, method, path, mut headers, body) = match choice {
            0..=2 if route.kind == MethodKind::Procedure => {
                let body = self.valid_body(route);
                let bytes = self.mutator.mutate(&body, Shape::Json, &[]);
                (
                    "mutated JSON body",
                    reqwest::Method::POST,
                    route.path(),
                    json_type(),
                    Some(bytes),
                )
            }
            3 | 4 if route.kind == MethodKind::Procedure => (
                "mutated MLS bytes",
                reqwest::Method::POST,
                route.path(),
                json_type(),
                Some(self.mutated_mls_body(route)),
            ),
            5 if route.kind == MethodKind::Procedure => (
                "odd strings",
                reqwest::Method::POST,
                route.path(),
                json_type(),
                Some(self.odd_body(route)),
            ),
            0..=5 => {
                let query = self.valid_query(route);
                let query = self
                    .mutator
                    .mutate(query.as_bytes(), Shape::NsidAndQuery, &[]);
                let query = percent_escape_controls(&query);
                (
                    "mutated query string",
                    reqwest::Method::GET,
                    format!("{}?{query}", route.path()),
                    Vec::new(),
                    None,
                )
            }
            6 => self.odd_method_or_path(route),
            7 | 8 => self.bad_headers(route),
            _ => {
                return Planned {
                    kind: "malformed HTTP",
                    valid_token: false,
                    request: Request::Raw(self.raw_request(route)),
                };
            }
        };
        if valid_token {
            let user = self.user();
            headers.push((
                "authorization".into(),
                format!(
                    "Bearer {}",
                    token_for(&user.identity, route.nsid, &self.audience())
                )
                .into_bytes(),
            ));
        } else if !headers.iter().any(|(name, _)| name == "authorization") {
            headers.push(("authorization".into(), self.bad_token(route).into_bytes()));
        }
        Planned {
            kind,
            valid_token,
            request: Request::Http {
                method,
                nsid: route.nsid,
                path,
                headers,
                body,
            },
        }
    }

    fn audience(&self) -> Did {
        self.setup.audience.clone()
    }

    fn user(&mut self) -> User {
        match self.rng.u8(0..5) {
            0 => self.setup.outsider.clone(),
            n => self.setup.members[usize::from(n % 2)].clone(),
        }
    }

    fn device(&mut self) -> String {
        self.setup.devices[self.rng.usize(..self.setup.devices.len())].clone()
    }

    fn bytes_field(&self, name: &str) -> Value {
        let bytes = self.setup.mls.get(name).cloned().unwrap_or_default();
        json!({ "$bytes": base64_standard(&bytes) })
    }

    /// A body the method would accept from the right caller at the right
    /// time (its MLS bytes are real), before mutation.
    fn valid_body(&mut self, route: &Route) -> Vec<u8> {
        let convo = self.setup.convo.clone();
        let device = self.device();
        let key = format!("k{}", self.rng.u32(..));
        let body = match route.nsid.rsplit('.').next().unwrap_or_default() {
            "addMembers" => {
                json!({"convoId": convo, "commit": self.bytes_field("addCommit"), "welcome": self.bytes_field("welcome"), "groupInfo": self.bytes_field("groupInfo"), "idempotencyKey": key})
            }
            "commitGroupChange" => {
                json!({"convoId": convo, "commit": self.bytes_field("commit"), "groupInfo": self.bytes_field("groupInfo"), "idempotencyKey": key})
            }
            "confirmWelcome" => {
                json!({"convoId": convo, "deviceId": device, "success": false, "errorDetails": "x"})
            }
            "createConvo" => {
                json!({"groupId": "686f7374696c65206672657368206772", "cipherSuite": "MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519", "groupInfo": self.bytes_field("createGroupInfo"), "metadata": {"name": "n", "description": "d"}})
            }
            "getSubscriptionTicket" => json!({"deviceId": device}),
            "leaveConvo" => json!({"convoId": convo, "proposal": self.bytes_field("proposal")}),
            "processExternalCommit" => {
                json!({"convoId": convo, "externalCommit": self.bytes_field("commit"), "groupInfo": self.bytes_field("groupInfo"), "idempotencyKey": key})
            }
            "publishKeyPackage" => json!({"keyPackage": self.bytes_field("keyPackage")}),
            "publishKeyPackages" => json!({"keyPackages": [self.bytes_field("keyPackage")]}),
            "removeMember" => {
                json!({"convoId": convo, "did": self.setup.members[1].did().as_str(), "commit": self.bytes_field("commit"), "groupInfo": self.bytes_field("groupInfo")})
            }
            "sendEphemeral" => {
                json!({"convoId": convo, "ciphertext": self.bytes_field("ciphertext"), "epoch": 1})
            }
            "sendMessage" => {
                json!({"convoId": convo, "msgId": format!("m{}", self.rng.u64(..)), "ciphertext": self.bytes_field("ciphertext"), "epoch": 1, "idempotencyKey": key})
            }
            _ => json!({}),
        };
        serde_json::to_vec(&body).unwrap_or_default()
    }

    /// A valid body whose MLS bytes (every `$bytes` field) are mutated.
    fn mutated_mls_body(&mut self, route: &Route) -> Vec<u8> {
        let mut body: Value = serde_json::from_slice(&self.valid_body(route)).unwrap_or_default();
        self.mutate_bytes_fields(&mut body);
        serde_json::to_vec(&body).unwrap_or_default()
    }

    fn mutate_bytes_fields(&mut self, value: &mut Value) {
        match value {
            Value::Object(object) => {
                if let Some(Value::String(encoded)) = object.get_mut("$bytes") {
                    let bytes = base64_decode(encoded);
                    *encoded = base64_standard(&self.mutator.mutate(&bytes, Shape::Bytes, &[]));
                    return;
                }
                object
                    .values_mut()
                    .for_each(|child| self.mutate_bytes_fields(child));
            }
            Value::Array(items) => items
                .iter_mut()
                .for_each(|child| self.mutate_bytes_fields(child)),
            _ => {}
        }
    }

    /// A valid body with one string field replaced by an odd string.
    fn odd_body(&mut self, route: &Route) -> Vec<u8> {
        let mut body: Value = serde_json::from_slice(&self.valid_body(route)).unwrap_or_default();
        let odd = ODD_STRINGS[self.rng.usize(..ODD_STRINGS.len())];
        let odd = match odd {
            "<huge>" => "x".repeat(self.rng.usize(10_000..3_000_000)),
            other => other.to_owned(),
        };
        if let Value::Object(object) = &mut body {
            let keys: Vec<String> = object.keys().cloned().collect();
            if !keys.is_empty() {
                let key = &keys[self.rng.usize(..keys.len())];
                object.insert(key.clone(), Value::String(odd.clone()));
            }
            // Or a `$bytes` that is not base64.
            if self.rng.bool() {
                for value in object.values_mut() {
                    if let Some(Value::String(encoded)) = value.get_mut("$bytes") {
                        *encoded = odd.clone();
                    }
                }
            }
        }
        let mut bytes = serde_json::to_vec(&body).unwrap_or_default();
        if odd.starts_with("\\u") {
            // A JSON escape the serializer would not write (lone surrogates).
            let needle = serde_json::to_vec(&Value::String(odd.clone())).unwrap_or_default();
            let raw = format!("\"{odd}\"");
            bytes = replace(&bytes, &needle, raw.as_bytes());
        }
        bytes
    }

    fn valid_query(&mut self, route: &Route) -> String {
        let convo = self.setup.convo.clone();
        let device = percent(&self.device());
        let did = percent(self.setup.members[1].did().as_str());
        match route.nsid.rsplit('.').next().unwrap_or_default() {
            "getConvos" => "limit=10".into(),
            "getEpoch" | "getGroupInfo" => format!("convoId={convo}"),
            "getExpectedConversations" => format!("deviceId={device}&limit=5"),
            "getKeyPackageStatus" => format!("deviceId={device}"),
            "getKeyPackages" => {
                format!("dids={did}&cipherSuite=MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519")
            }
            "getMessages" => format!("convoId={convo}&sinceSeq=0&limit=20"),
            "getWelcome" => format!("convoId={convo}&deviceId={device}"),
            "subscribeConvoEvents" => format!("deviceId={device}"),
            _ => String::new(),
        }
    }

    fn odd_method_or_path(&mut self, route: &Route) -> Drawn {
        let verbs = [
            "GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "BREW",
        ];
        let method = reqwest::Method::from_bytes(verbs[self.rng.usize(..verbs.len())].as_bytes())
            .unwrap_or(reqwest::Method::GET);
        let paths = [
            route.path(),
            "/xrpc/blue.catbird.mls.noSuchMethod".to_owned(),
            "/xrpc/".to_owned(),
            "/xrpc/..%2f..%2fetc%2fpasswd".to_owned(),
            format!("/xrpc/{}", "a.".repeat(self.rng.usize(1..3000))),
            "/xrpc/com.atproto.server.describeServer".to_owned(),
            format!("{}/extra", route.path()),
            "/".to_owned(),
            "/metrics/../xrpc/_health".to_owned(),
            format!("/XRPC/{}", route.nsid),
        ];
        let path = paths[self.rng.usize(..paths.len())].clone();
        (
            "unknown method or verb",
            method,
            path,
            json_type(),
            Some(b"{}".to_vec()),
        )
    }

    fn bad_headers(&mut self, route: &Route) -> Drawn {
        let method = if route.kind == MethodKind::Procedure {
            reqwest::Method::POST
        } else {
            reqwest::Method::GET
        };
        let body = (route.kind == MethodKind::Procedure).then(|| self.valid_body(route));
        let path = match route.kind {
            MethodKind::Procedure => route.path(),
            _ => format!("{}?{}", route.path(), self.valid_query(route)),
        };
        let headers: Vec<(String, Vec<u8>)> = match self.rng.u8(0..8) {
            0 => vec![("content-type".into(), b"text/plain".to_vec())],
            1 => vec![(
                "content-type".into(),
                b"application/json; charset=latin-1; x=\xff".to_vec(),
            )],
            2 => vec![("x-big".into(), vec![b'a'; self.rng.usize(8_000..200_000)])],
            3 => (0..self.rng.usize(50..300))
                .map(|i| (format!("x-h{i}"), b"v".to_vec()))
                .collect(),
            4 => vec![(
                "authorization".into(),
                b"Basic YWxpY2U6cGFzc3dvcmQ=".to_vec(),
            )],
            5 => vec![(
                "authorization".into(),
                format!("Bearer {}", "e".repeat(self.rng.usize(9_000..60_000))).into_bytes(),
            )],
            6 => vec![
                ("content-encoding".into(), b"gzip".to_vec()),
                ("content-type".into(), b"application/json".to_vec()),
            ],
            _ => vec![
                ("atproto-proxy".into(), b"did:web:elsewhere#svc".to_vec()),
                ("x-forwarded-for".into(), b"1.2.3.4, \xc0\xff".to_vec()),
            ],
        };
        ("bad headers", method, path, headers, body)
    }

    fn bad_token(&mut self, route: &Route) -> String {
        let user = self.user();
        let audience = self.audience();
        match self.rng.u8(0..7) {
            0 => String::new(),
            1 => "Bearer".into(),
            2 => "Bearer not.a.jwt".into(),
            3 => format!(
                "Bearer {}",
                mint_token(
                    &user.identity,
                    &audience,
                    "blue.catbird.mls.getConvos",
                    TOKEN_LIFETIME
                )
            )
            .replace("getConvos", route.nsid),
            4 => {
                let other = Did::new("did:web:another.service").unwrap_or(audience);
                format!(
                    "Bearer {}",
                    mint_token(&user.identity, &other, route.nsid, TOKEN_LIFETIME)
                )
            }
            5 => {
                let token = mint_token(&user.identity, &audience, route.nsid, TOKEN_LIFETIME);
                let mut bytes = token.into_bytes();
                let len = bytes.len();
                let index = self.rng.usize(..len);
                bytes[index] = b"AZaz09-_!."[self.rng.usize(..10)];
                format!("Bearer {}", String::from_utf8_lossy(&bytes))
            }
            _ => format!(
                "Bearer {}",
                mint_token(
                    &user.identity,
                    &audience,
                    "blue.catbird.mls.noSuchMethod",
                    TOKEN_LIFETIME
                )
            ),
        }
    }

    fn raw_request(&mut self, route: &Route) -> Vec<u8> {
        let path = route.path();
        let host = self.setup.url.trim_start_matches("http://").to_owned();
        let requests: Vec<Vec<u8>> = vec![
            format!("GET {path}?convoId=\0 HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes(),
            format!("POST {path} HTTP/1.1\r\nHost: {host}\r\nX-Nul: a\0b\r\nContent-Length: 2\r\n\r\n{{}}").into_bytes(),
            format!("POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 10\r\nContent-Length: 2\r\n\r\n{{}}").into_bytes(),
            format!("POST {path} HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\nzz\r\n{{}}\r\n0\r\n\r\n").into_bytes(),
            format!("GET {path} HTTP/9.9\r\nHost: {host}\r\n\r\n").into_bytes(),
            format!("GET /{} HTTP/1.1\r\nHost: {host}\r\n\r\n", "x".repeat(100_000)).into_bytes(),
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage TLS hello\r\n\r\n".to_vec(),
            format!("POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: 99999999999999999999\r\n\r\n{{}}").into_bytes(),
            format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nBad Header Name: x\r\n\r\n").into_bytes(),
            [format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer ").as_bytes(), b"\xff\xfe\r\n\r\n"].concat(),
        ];
        requests[self.rng.usize(..requests.len())].clone()
    }
}

/// Strings that break assumptions: NUL, control characters, lone
/// surrogates (written as JSON escapes), bidi overrides, huge ones.
const ODD_STRINGS: &[&str] = &[
    "",
    "\0",
    "a\0b",
    "\u{1}\u{1f}\u{7f}",
    "\\ud800",
    "\\udfff\\ud800",
    "\u{202e}evil\u{202c}",
    "\u{feff}",
    "💥",
    "<huge>",
    "not base64!!",
    "AAA",
    "====",
    "did:plc:",
    "../../etc/passwd",
    "%00",
    "'; DROP TABLE convos; --",
];

fn json_type() -> Vec<(String, Vec<u8>)> {
    vec![("content-type".into(), b"application/json".to_vec())]
}

fn token_for(identity: &LocalIdentity, nsid: &str, audience: &Did) -> String {
    mint_token(identity, audience, nsid, TOKEN_LIFETIME)
}

/// What came back for one request.
struct Answer {
    /// The status code, or what went wrong on the wire.
    status: String,
    /// The log position a 2xx of a method that appends to the log reports.
    seq: Option<i64>,
    /// The start of the body (kept for 5xx answers).
    body: String,
}

impl From<String> for Answer {
    fn from(status: String) -> Self {
        Self {
            status,
            seq: None,
            body: String::new(),
        }
    }
}

/// Log entries the service acknowledged (distinct seqs: a retried request
/// is answered with the entry it made the first time).
#[derive(Default)]
struct Acknowledged {
    applications: BTreeSet<i64>,
    commits: BTreeSet<i64>,
    proposals: BTreeSet<i64>,
}

impl Acknowledged {
    fn record(&mut self, nsid: &str, seq: i64) {
        match nsid.rsplit('.').next().unwrap_or_default() {
            "sendMessage" => self.applications.insert(seq),
            "leaveConvo" => self.proposals.insert(seq),
            "commitGroupChange" | "addMembers" | "removeMember" | "processExternalCommit" => {
                self.commits.insert(seq)
            }
            _ => false,
        };
    }
}

/// Sends one request; what came back.
async fn send(http: &reqwest::Client, url: &str, address: &str, request: &Request) -> Answer {
    match request {
        Request::Http {
            method,
            path,
            headers,
            body,
            ..
        } => {
            let mut builder = http.request(method.clone(), format!("{url}{path}"));
            for (name, value) in headers {
                match reqwest::header::HeaderValue::from_bytes(value) {
                    Ok(value) => builder = builder.header(name.as_str(), value),
                    Err(_) => return String::from("not sendable").into(),
                }
            }
            if let Some(body) = body {
                builder = builder.body(body.clone());
            }
            match builder.send().await {
                Ok(response) => {
                    let status = response.status();
                    let body = response.bytes().await.unwrap_or_default();
                    let seq = status
                        .is_success()
                        .then(|| serde_json::from_slice::<Value>(&body).ok())
                        .flatten()
                        .and_then(|output| output.get("seq")?.as_i64());
                    Answer {
                        status: status.as_u16().to_string(),
                        seq,
                        body: String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned(),
                    }
                }
                Err(error) if error.is_timeout() => String::from("timeout").into(),
                Err(error) if error.is_builder() => String::from("not sendable").into(),
                Err(_) => String::from("connection closed").into(),
            }
        }
        Request::Raw(bytes) => raw(address, bytes).await.into(),
    }
}

/// Writes `bytes` to a new connection; the status line's code, or
/// "connection closed" when the service closed it without an answer.
async fn raw(address: &str, bytes: &[u8]) -> String {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(address).await?;
        stream.write_all(bytes).await?;
        let mut buffer = vec![0; 64];
        let read = stream.read(&mut buffer).await?;
        Ok::<_, std::io::Error>(buffer[..read].to_vec())
    };
    match tokio::time::timeout(Duration::from_secs(10), exchange).await {
        Ok(Ok(answer)) => String::from_utf8_lossy(&answer)
            .strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.get(..3))
            .map_or_else(|| "connection closed".into(), str::to_owned),
        Ok(Err(_)) => "connection closed".into(),
        Err(_) => "timeout".into(),
    }
}

/// What must not change: the conversation's MLS state and membership, and
/// its log except for acknowledged application messages.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Snapshot {
    epoch: i64,
    state: Vec<u8>,
    group_info: Vec<u8>,
    devices: i64,
    users: i64,
    handshakes: i64,
    applications: i64,
}

async fn snapshot(database: &Database, convo: &str) -> Result<Snapshot, BenchError> {
    let row: (i64, Vec<u8>, Vec<u8>, i64, i64, i64, i64) = sqlx::query_as(
        "SELECT c.epoch, sha256(c.state), sha256(c.group_info),
                (SELECT count(*) FROM convo_devices d WHERE d.convo_id = c.group_id AND d.left_at IS NULL),
                (SELECT count(*) FROM convo_users u WHERE u.convo_id = c.group_id AND u.left_at IS NULL),
                (SELECT count(*) FROM convo_messages m WHERE m.convo_id = c.group_id AND m.kind <> 'application'),
                (SELECT count(*) FROM convo_messages m WHERE m.convo_id = c.group_id AND m.kind = 'application')
           FROM convos c WHERE c.group_id = decode($1, 'hex')",
    )
    .bind(convo)
    .fetch_one(&database.pool)
    .await
    .map_err(BenchError::database)?;
    Ok(Snapshot {
        epoch: row.0,
        state: row.1,
        group_info: row.2,
        devices: row.3,
        users: row.4,
        handshakes: row.5,
        applications: row.6,
    })
}

fn compare(before: &Snapshot, after: &Snapshot, acknowledged: &Acknowledged) -> (bool, String) {
    let commits = i64::try_from(acknowledged.commits.len()).unwrap_or(i64::MAX);
    let proposals = i64::try_from(acknowledged.proposals.len()).unwrap_or(i64::MAX);
    let applications = i64::try_from(acknowledged.applications.len()).unwrap_or(i64::MAX);
    // Without an acknowledged commit or proposal, the group is untouched
    // byte for byte; with them, it moved by exactly what was acknowledged.
    let group_ok = if commits + proposals == 0 {
        before
            == &Snapshot {
                applications: before.applications,
                ..after.clone()
            }
    } else {
        after.epoch - before.epoch == commits
    };
    let handshakes = after.handshakes - before.handshakes;
    let grown = after.applications - before.applications;
    let unchanged = group_ok && handshakes == commits + proposals && grown == applications;
    let description = format!(
        "epoch {} -> {} ({commits} commits acknowledged), state {}, GroupInfo {}, {} -> {} devices, \
         commits and proposals +{handshakes} ({} acknowledged), application messages +{grown} \
         ({applications} acknowledged): {}",
        before.epoch,
        after.epoch,
        if before.state == after.state {
            "unchanged"
        } else {
            "changed"
        },
        if before.group_info == after.group_info {
            "unchanged"
        } else {
            "changed"
        },
        before.devices,
        after.devices,
        commits + proposals,
        if unchanged {
            "nothing changed that was not acknowledged"
        } else {
            "CHANGED beyond what was acknowledged"
        }
    );
    (unchanged, description)
}

fn base64_standard(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap_or_default()
}

fn percent(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// Query bytes as a URL can carry them: controls, spaces and non-ASCII
/// percent-escaped (so `%00` arrives as a NUL after decoding).
fn percent_escape_controls(query: &[u8]) -> String {
    query
        .iter()
        .map(|&b| {
            if b.is_ascii_graphic() && b != b'#' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn replace(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    match haystack
        .windows(needle.len().max(1))
        .position(|window| window == needle)
    {
        Some(at) if !needle.is_empty() => {
            [&haystack[..at], with, &haystack[at + needle.len()..]].concat()
        }
        _ => haystack.to_vec(),
    }
}
