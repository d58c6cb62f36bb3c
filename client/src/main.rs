//! `catbird-mls-client`: the developer CLI of the client SDK. Local
//! identities and tokens for trying the service with curl, throwaway
//! KeyPackages, and the demo conversation against a running service.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use catbird_generated::lexicons::blue::catbird::mls::{
    publish_key_package, subscribe_convo_events,
};
use catbird_generated::runtime::Did;
use catbird_generated::runtime::xrpc::futures_util::StreamExt as _;
use catbird_mls_client::{Service, identity, keypackage, story};
use catbird_mls_core::auth::Algorithm;
use catbird_mls_core::device::DeviceId;
use catbird_mls_core::mls_crypto;
use clap::{Args, Parser, Subcommand, ValueEnum};

/// The DID directory `scripts/serve` has the service read: this checkout's
/// `target/local/dids`, wherever the tool is run from.
const LOCAL_DID_DIRECTORY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/local/dids");

#[derive(Parser)]
#[command(version, about = "Developer tools of the catbird-mls client SDK")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where local identities live.
#[derive(Args)]
struct Directory {
    /// The DID document directory the service resolves DIDs from (default:
    /// this checkout's target/local/dids, which `scripts/serve` uses).
    #[arg(long, env = "CATBIRD_DID_DIRECTORY", default_value = LOCAL_DID_DIRECTORY)]
    did_directory: PathBuf,
}

/// Which service the tokens are for.
#[derive(Args)]
struct Audience {
    /// The service DID (the tokens' `aud`).
    #[arg(long, env = "CATBIRD_SERVICE_DID", default_value = catbird_mls_core::LOCAL_SERVICE_DID)]
    service_did: String,
}

#[derive(Subcommand)]
enum Command {
    /// Create a local identity: a key and its DID document in the DID
    /// directory, for trying the service without a PDS. Prints the DID.
    CreateIdentity {
        /// A short name; the handle becomes `<name>.test`.
        name: String,
        /// Signature algorithm of the key.
        #[arg(long, value_enum, default_value = "es256k")]
        algorithm: KeyAlgorithm,
        #[command(flatten)]
        directory: Directory,
    },
    /// Print a short-lived service-auth token of a local identity for one
    /// method, for `curl -H "Authorization: Bearer $(...)"`.
    Token {
        /// The identity's DID (from `create-identity`).
        did: String,
        /// The method (NSID) the token is for: its `lxm` claim.
        method: String,
        /// Token lifetime in seconds.
        #[arg(long, default_value_t = 60)]
        lifetime: u64,
        #[command(flatten)]
        audience: Audience,
        #[command(flatten)]
        directory: Directory,
    },
    /// Print the JSON body of a publishKeyPackage call carrying a fresh
    /// KeyPackage of a device of a local identity, for trying the directory
    /// with curl. Its private keys are discarded: it can be published and
    /// fetched, never used to join a group.
    KeyPackage {
        /// The identity's DID.
        did: String,
        /// The device name: the credential is `<did>#<device>`.
        #[arg(long, default_value = "cli")]
        device: String,
        /// The cipher suite, by its RFC 9420 name.
        #[arg(long, default_value = "MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519")]
        cipher_suite: String,
        /// Make it a last-resort KeyPackage.
        #[arg(long)]
        last_resort: bool,
    },
    /// Follow a device's event stream (subscribeConvoEvents) and print each
    /// frame as a JSON line, as it arrives, until the stream ends. The
    /// payloads stay encrypted: this device holds no MLS state.
    Follow {
        /// The identity's DID.
        did: String,
        /// The device name: the stream is for `<did>#<device>`.
        #[arg(long, default_value = "cli")]
        device: String,
        /// The service's base URL.
        #[arg(long, env = "CATBIRD_URL", default_value = "http://127.0.0.1:2583")]
        url: String,
        #[command(flatten)]
        audience: Audience,
        #[command(flatten)]
        directory: Directory,
    },
    /// Run the demo against a running service (`scripts/serve`): new local
    /// users alice and bob talk in a conversation, bob's phone is lost and
    /// his new phone rejoins by external commit. One line per step.
    Demo {
        /// The service's base URL.
        #[arg(long, env = "CATBIRD_URL", default_value = "http://127.0.0.1:2583")]
        url: String,
        #[command(flatten)]
        audience: Audience,
        #[command(flatten)]
        directory: Directory,
    },
    /// Run the demo through a PDS: two of its accounts log in, alice calls
    /// the service with tokens from her PDS's getServiceAuth, bob through
    /// his PDS (atproto-proxy), his event stream opened with a ticket asked
    /// through it. The service must resolve their DIDs where the PDS
    /// registered them (its PLC directory). One line per step.
    DemoPds(DemoPds),
}

#[derive(Args)]
struct DemoPds {
    /// The PDS's base URL.
    #[arg(long, env = "CATBIRD_PDS_URL")]
    pds_url: String,
    /// The service's base URL (its public URL: alice's calls and bob's
    /// event stream go there).
    #[arg(long, env = "CATBIRD_URL", default_value = "http://127.0.0.1:2583")]
    url: String,
    #[command(flatten)]
    audience: Audience,
    /// alice's account (handle, DID or email).
    #[arg(long, default_value = "alice.test")]
    alice: String,
    /// alice's password.
    #[arg(long, env = "CATBIRD_ALICE_PASSWORD", hide_env_values = true)]
    alice_password: String,
    /// bob's account (handle, DID or email).
    #[arg(long, default_value = "bob.test")]
    bob: String,
    /// bob's password.
    #[arg(long, env = "CATBIRD_BOB_PASSWORD", hide_env_values = true)]
    bob_password: String,
}

#[derive(Clone, Copy, ValueEnum)]
enum KeyAlgorithm {
    Es256k,
    Es256,
}

type CliResult = Result<(), Box<dyn std::error::Error>>;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let result = match Cli::parse().command {
        Command::CreateIdentity {
            name,
            algorithm,
            directory,
        } => create_identity(&name, algorithm, &directory),
        Command::Token {
            did,
            method,
            lifetime,
            audience,
            directory,
        } => token(&did, &method, lifetime, &audience, &directory),
        Command::KeyPackage {
            did,
            device,
            cipher_suite,
            last_resort,
        } => key_package(&did, &device, &cipher_suite, last_resort),
        Command::Demo {
            url,
            audience,
            directory,
        } => demo(url, &audience, directory).await,
        Command::Follow {
            did,
            device,
            url,
            audience,
            directory,
        } => follow(&did, &device, &url, &audience, &directory).await,
        Command::DemoPds(args) => demo_pds(args).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            let _ = writeln!(std::io::stderr(), "error: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn create_identity(name: &str, algorithm: KeyAlgorithm, directory: &Directory) -> CliResult {
    let algorithm = match algorithm {
        KeyAlgorithm::Es256k => Algorithm::Es256k,
        KeyAlgorithm::Es256 => Algorithm::Es256,
    };
    let identity = identity::create_identity(&directory.did_directory, name, algorithm)?;
    print_line(identity.did.as_str())
}

fn token(
    did: &str,
    method: &str,
    lifetime: u64,
    audience: &Audience,
    directory: &Directory,
) -> CliResult {
    let identity = identity::load_identity(&directory.did_directory, &Did::new(did)?)?;
    let audience = Did::new(&audience.service_did)?;
    let lifetime = Duration::from_secs(lifetime);
    print_line(&identity::mint_token(
        &identity, &audience, method, lifetime,
    ))
}

fn key_package(did: &str, device: &str, cipher_suite: &str, last_resort: bool) -> CliResult {
    let device = DeviceId::parse(&format!("{did}#{device}"))?;
    let suite = mls_crypto::requested_cipher_suite(cipher_suite)?;
    let body = publish_key_package::Input {
        extra: Default::default(),
        key_package: keypackage::throwaway_key_package(&device, &suite, last_resort)?.into(),
        idempotency_key: None,
    };
    print_line(&serde_json::to_string(&body)?)
}

async fn demo(url: String, audience: &Audience, directory: Directory) -> CliResult {
    let options = story::Options {
        url,
        did_directory: directory.did_directory,
        service_did: Did::new(&audience.service_did)?,
    };
    story::run(&options, &mut std::io::stdout()).await?;
    Ok(())
}

async fn demo_pds(args: DemoPds) -> CliResult {
    let options = story::PdsOptions {
        service: Service {
            did: Did::new(&args.audience.service_did)?,
            url: args.url,
        },
        pds_url: args.pds_url,
        alice: story::Login {
            identifier: args.alice,
            password: args.alice_password,
        },
        bob: story::Login {
            identifier: args.bob,
            password: args.bob_password,
        },
    };
    story::run_through_pds(&options, &mut std::io::stdout()).await?;
    Ok(())
}

async fn follow(
    did: &str,
    device: &str,
    url: &str,
    audience: &Audience,
    directory: &Directory,
) -> CliResult {
    let identity = identity::load_identity(&directory.did_directory, &Did::new(did)?)?;
    let client = identity::service_client(url, &identity, &Did::new(&audience.service_did)?);
    let params = subscribe_convo_events::Params {
        device_id: DeviceId::parse(&format!("{did}#{device}"))?.to_string(),
        ticket: None,
    };
    let mut events = client.subscribe_convo_events(&params).await?;
    while let Some(frame) = events.next().await {
        print_line(&serde_json::to_string(&frame?)?)?;
    }
    Ok(())
}

/// The tools print their result on stdout, for shell use.
fn print_line(text: &str) -> CliResult {
    writeln!(std::io::stdout(), "{text}")?;
    Ok(())
}
