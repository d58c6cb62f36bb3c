//! Fuzz targets for catbird-mls, runnable on stable Rust two ways:
//!
//! - [`run`]: a bounded, seeded mutation loop over each target's seed
//!   corpus (real lexicons, real tokens, real OpenMLS messages), for CI
//!   (`catbird-mls-fuzz --cases N`) and for longer runs without
//!   libFuzzer (`--seconds S`);
//! - the libFuzzer binaries in `fuzz_targets/` (feature `libfuzzer`,
//!   built by cargo-fuzz from `scripts/fuzz`): coverage-guided, the
//!   same [`Target::check`].
//!
//! A target says what must hold for *every* input: no panic (the runner
//! catches it), and the target's own property (no 5xx, a diagnostic for
//! every refusal, a state that only changes when the input is accepted),
//! reported as a [`Violation`].
//!
//! | module | target(s) |
//! |---|---|
//! | [`lexicon`] | the lexicon loader and the rest of the codegen pipeline |
//! | [`token`] | JWT decoding and the service's verifier |
//! | [`xrpc`] | query strings and JSON bodies of every method |
//! | [`mls`] | every MLS input a procedure uploads |

pub mod lexicon;
pub mod mls;
pub mod mutate;
pub mod run;
pub mod token;
pub mod xrpc;

#[cfg(feature = "libfuzzer")]
pub use libfuzzer_sys;

/// What a target made of one input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The input was accepted (a lexicon generated, a token verified, a
    /// commit merged, ...).
    Accepted,
    /// The input was refused the way the service refuses bad input: a
    /// diagnostic, a 4xx.
    Refused,
}

/// A property of a target that an input broke (a panic is caught by the
/// runner instead).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Violation(pub String);

/// How a target's inputs are shaped, so that mutations keep enough of
/// the shape to get past the first parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Opaque bytes (TLS-encoded MLS messages).
    Bytes,
    /// A JSON document.
    Json,
    /// A first line (a method's NSID) and a JSON document after it.
    NsidAndJson,
    /// A first line (a method's NSID) and a query string after it.
    NsidAndQuery,
    /// A compact JWT: three base64url segments, two of them JSON.
    Jwt,
}

/// One fuzz target.
pub trait Target: Send + Sync {
    /// The name used on the command line and for the libFuzzer binary.
    fn name(&self) -> &'static str;
    /// Valid inputs to start from; every one is accepted.
    fn seeds(&self) -> &[Vec<u8>];
    /// The inputs' shape, for the mutator.
    fn shape(&self) -> Shape;
    /// Words worth inserting (field and parameter names, NSIDs, ...).
    fn dictionary(&self) -> Vec<Vec<u8>> {
        Vec::new()
    }
    /// Feeds one input to the code under test.
    fn check(&self, input: &[u8]) -> Result<Outcome, Violation>;
}

/// The names of every target, in the order they run.
pub const TARGETS: &[&str] = &[
    "lexicon",
    "token",
    "params",
    "body",
    "mls_create",
    "mls_commit",
    "mls_external_commit",
    "mls_welcome",
    "mls_key_package",
    "mls_application",
    "mls_leave",
];

/// Builds the target `name` with its seeds (MLS targets run real OpenMLS
/// clients to make theirs), or `None` for an unknown name.
pub fn target(name: &str) -> Option<Box<dyn Target>> {
    Some(match name {
        "lexicon" => Box::new(lexicon::LexiconTarget::new()),
        "token" => Box::new(token::TokenTarget::new()),
        "params" => Box::new(xrpc::ParamsTarget::new()),
        "body" => Box::new(xrpc::BodyTarget::new()),
        other => mls::target(other)?,
    })
}

/// Defines a libFuzzer entry point for the target `name`: a violation is
/// a panic there, so libFuzzer records the input as a crash.
#[cfg(feature = "libfuzzer")]
#[macro_export]
macro_rules! libfuzzer_target {
    ($name:literal) => {
        static TARGET: std::sync::LazyLock<Box<dyn $crate::Target>> =
            std::sync::LazyLock::new(|| $crate::target($name).expect("a known target"));
        $crate::libfuzzer_sys::fuzz_target!(|data: &[u8]| {
            if let Err(violation) = TARGET.check(data) {
                panic!("{}: {violation}", $name);
            }
        });
    };
}
