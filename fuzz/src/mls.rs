//! The MLS inputs of every procedure, fed to what the service calls to
//! validate an upload: `engine::bootstrap` (createConvo's GroupInfo),
//! `engine::apply_commit` (addMembers, commitGroupChange, removeMember,
//! processExternalCommit: commit and GroupInfo), `welcome_recipients`
//! (addMembers' Welcome), `check_application_header` (sendMessage,
//! sendEphemeral), `apply_self_remove_proposal` (leaveConvo) and
//! `keypackages::validate` (publishKeyPackage(s)).
//!
//! Seeds are made by real OpenMLS clients (the SDK's `Installation`):
//! Alice creates a group and adds Bob (epoch 1, the state every commit
//! target starts from); then Alice adds Carol, updates her leaf, removes
//! Bob; Dave joins by external commit; Alice sends a message; Bob asks to
//! leave; Carol publishes a KeyPackage.
//!
//! What must hold: no panic; a refusal is one the service answers with a
//! 4xx (`ServiceError::name` is `Some`), never an internal error; and an
//! accepted input yields a state that loads and agrees with the outcome
//! (the stored state is borrowed immutably, so a refused input cannot
//! have changed it).

use catbird_generated::lexicons::blue::catbird::mls::defs::CipherSuite;
use catbird_generated::runtime::Did;
use catbird_mls::error::ServiceError;
use catbird_mls::keypackages;
use catbird_mls_client::{Installation, SUITE, StagedMessages, staged_messages, to_bytes};
use catbird_mls_core::groups::engine::{self, LoadedGroup, StoredState};
use openmls::group::{CommitBuilder, Initial};
use openmls::prelude::{GroupId, LeafNodeIndex, MlsGroup, MlsMessageOut};

use crate::{Outcome, Shape, Target, Violation};

const GROUP: &[u8] = b"fuzzed group";

/// Which procedure input a target feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Input {
    /// createConvo's GroupInfo, by Alice.
    Create,
    /// A member's commit and its GroupInfo, by Alice at epoch 1.
    Commit,
    /// An external commit and its GroupInfo, by Dave at epoch 1.
    ExternalCommit,
    Welcome,
    KeyPackage,
    /// An application message at epoch 1.
    Application,
    /// A leave proposal by Bob at epoch 1.
    Leave,
}

const INPUTS: &[(&str, Input)] = &[
    ("mls_create", Input::Create),
    ("mls_commit", Input::Commit),
    ("mls_external_commit", Input::ExternalCommit),
    ("mls_welcome", Input::Welcome),
    ("mls_key_package", Input::KeyPackage),
    ("mls_application", Input::Application),
    ("mls_leave", Input::Leave),
];

/// The MLS target `name`, with seeds from freshly made clients.
pub fn target(name: &str) -> Option<Box<dyn Target>> {
    let &(name, input) = INPUTS.iter().find(|(known, _)| *known == name)?;
    Some(Box::new(MlsTarget::new(name, input)))
}

/// A commit target's input: the commit's length (u32, big-endian), the
/// commit, then the GroupInfo, so that mutations reach both.
pub fn commit_input(commit: &[u8], group_info: &[u8]) -> Vec<u8> {
    let length = u32::try_from(commit.len()).expect("a commit shorter than 4 GiB");
    [&length.to_be_bytes()[..], commit, group_info].concat()
}

fn split_commit_input(input: &[u8]) -> Option<(&[u8], &[u8])> {
    let length = u32::from_be_bytes(input.get(..4)?.try_into().ok()?);
    let rest = &input[4..];
    let length = usize::try_from(length)
        .ok()
        .filter(|&length| length <= rest.len())?;
    Some(rest.split_at(length))
}

struct MlsTarget {
    name: &'static str,
    input: Input,
    seeds: Vec<Vec<u8>>,
    /// The service's state of GROUP at epoch 1 (Alice and Bob).
    state: StoredState,
}

fn did(name: &str) -> Did {
    Did::new(format!("did:plc:{name}")).expect("a DID")
}

fn suite() -> CipherSuite {
    CipherSuite::Mls128Dhkemx25519Aes128gcmSha256Ed25519
}

fn installation(name: &str) -> Installation {
    Installation::new(&format!("did:plc:{name}#phone"), SUITE).expect("an installation")
}

fn wire(message: impl Into<MlsMessageOut>) -> Vec<u8> {
    to_bytes(&message.into()).expect("an MLSMessage").0
}

/// Stages a commit in Alice's group, keeps its messages, and discards it
/// (every commit seed is for epoch 1).
fn staged(
    alice: &Installation,
    group: &mut MlsGroup,
    build: impl for<'a> FnOnce(CommitBuilder<'a, Initial>) -> CommitBuilder<'a, Initial>,
) -> StagedMessages {
    let messages = alice.stage_commit(group, build).expect("a commit");
    alice.discard_pending(group).expect("discarding the commit");
    messages
}

impl MlsTarget {
    fn new(name: &'static str, input: Input) -> Self {
        let group_id = GroupId::from_slice(GROUP);
        let alice = installation("alice");
        let bob = installation("bob");
        let carol = installation("carol");
        let dave = installation("dave");

        let mut alice_group = alice.create_group(&group_id).expect("a group");
        let created = wire(alice.group_info(&alice_group, true).expect("a GroupInfo"));
        let state0 = engine::bootstrap(GROUP, &suite(), &created, &did("alice"))
            .expect("bootstrapping from Alice's GroupInfo")
            .state;
        let add_bob = alice
            .stage_commit(&mut alice_group, |builder| {
                builder.propose_adds([bob.key_package(false).expect("a KeyPackage")])
            })
            .expect("adding Bob");
        let mut group0 = LoadedGroup::load(&state0, GROUP).expect("loading the bootstrapped state");
        let state = engine::apply_commit(
            &mut group0,
            &add_bob.commit.0,
            &add_bob.group_info.0,
            &did("alice"),
        )
        .expect("the service accepting Bob's add")
        .state
        .applied_to(&state0);
        alice
            .merge_pending(&mut alice_group)
            .expect("merging Bob's add");
        let mut bob_group = bob
            .join(&add_bob.welcome.expect("a Welcome").0)
            .expect("Bob joining");

        let seeds = match input {
            Input::Create => vec![created],
            Input::Commit => {
                let carol_package = carol.key_package(false).expect("a KeyPackage");
                [
                    staged(&alice, &mut alice_group, |builder| {
                        builder.propose_adds([carol_package])
                    }),
                    staged(&alice, &mut alice_group, |builder| {
                        builder.force_self_update(true)
                    }),
                    staged(&alice, &mut alice_group, |builder| {
                        builder.propose_removals([LeafNodeIndex::new(1)])
                    }),
                ]
                .iter()
                .map(|commit| commit_input(&commit.commit.0, &commit.group_info.0))
                .collect()
            }
            Input::ExternalCommit => {
                let group_info = wire(alice.group_info(&alice_group, true).expect("a GroupInfo"));
                let (_, bundle) = dave
                    .join_externally(&group_info)
                    .expect("an external commit");
                let commit = staged_messages(bundle).expect("the external commit's messages");
                vec![commit_input(&commit.commit.0, &commit.group_info.0)]
            }
            Input::Welcome => {
                let carol_package = carol.key_package(false).expect("a KeyPackage");
                let add = staged(&alice, &mut alice_group, |builder| {
                    builder.propose_adds([carol_package])
                });
                vec![add.welcome.expect("a Welcome").0]
            }
            Input::KeyPackage => [false, true]
                .into_iter()
                .map(|last_resort| wire(carol.key_package(last_resort).expect("a KeyPackage")))
                .collect(),
            Input::Application => vec![
                alice
                    .encrypt(&mut alice_group, b"hello")
                    .expect("a message")
                    .0,
            ],
            Input::Leave => vec![wire(
                bob_group
                    .leave_group(bob.provider(), bob.signer())
                    .expect("a leave proposal"),
            )],
        };
        Self {
            name,
            input,
            seeds,
            state,
        }
    }

    fn refused(error: impl Into<ServiceError>) -> Result<Outcome, Violation> {
        let error = error.into();
        match error.name() {
            Some(_) => Ok(Outcome::Refused),
            None => Err(Violation(format!("an internal error (a 5xx): {error}"))),
        }
    }

    /// A fresh parse of the epoch-1 state (a refused input may leave a
    /// parsed group changed; the service then drops it).
    fn load(&self) -> LoadedGroup {
        LoadedGroup::load(&self.state, GROUP).expect("the epoch-1 state loads")
    }

    fn members_of(group: &LoadedGroup) -> Result<Vec<engine::Member>, Violation> {
        group
            .members()
            .map_err(|e| Violation(format!("the merged group's members: {e}")))
    }

    /// A refusal is typed, and a group that says it is intact (the service
    /// keeps such a group in its cache) still equals the stored state.
    fn refused_by(
        &self,
        group: &LoadedGroup,
        error: engine::EngineError,
    ) -> Result<Outcome, Violation> {
        if group.is_intact() {
            let snapshot = |group: &LoadedGroup| {
                group
                    .snapshot()
                    .map_err(|e| Violation(format!("a refused input's group: {e}")))
            };
            if snapshot(group)? != snapshot(&self.load())? {
                return Err(Violation(
                    "a refused input changed a group that says it is intact".into(),
                ));
            }
        }
        Self::refused(error)
    }

    /// An accepted commit or proposal left a state that loads, at `epoch`,
    /// with the members the outcome reports.
    fn check_state(
        state: &StoredState,
        epoch: u64,
        members: Option<&[engine::Member]>,
    ) -> Result<Outcome, Violation> {
        let stored = engine::epoch(state, GROUP)
            .map_err(|e| Violation(format!("the new state does not load: {e}")))?;
        if stored != epoch {
            return Err(Violation(format!(
                "the outcome says epoch {epoch}, the state {stored}"
            )));
        }
        if let Some(members) = members {
            let stored = engine::members(state, GROUP)
                .map_err(|e| Violation(format!("the new state's members: {e}")))?;
            if stored != members {
                return Err(Violation(
                    "the outcome's members differ from the state's".into(),
                ));
            }
        }
        Ok(Outcome::Accepted)
    }
}

impl Target for MlsTarget {
    fn name(&self) -> &'static str {
        self.name
    }

    fn seeds(&self) -> &[Vec<u8>] {
        &self.seeds
    }

    fn shape(&self) -> Shape {
        Shape::Bytes
    }

    fn check(&self, input: &[u8]) -> Result<Outcome, Violation> {
        match self.input {
            Input::Create => match engine::bootstrap(GROUP, &suite(), input, &did("alice")) {
                Ok(group) if group.epoch == 0 && group.members.len() == 1 => {
                    Self::check_state(&group.state, 0, Some(&group.members))
                }
                Ok(group) => Err(Violation(format!(
                    "bootstrapped at epoch {} with {} members",
                    group.epoch,
                    group.members.len()
                ))),
                Err(error) => Self::refused(error),
            },
            Input::Commit | Input::ExternalCommit => {
                let Some((commit, group_info)) = split_commit_input(input) else {
                    // Not a pair the procedures could have sent.
                    return Ok(Outcome::Refused);
                };
                let caller = did(if self.input == Input::Commit {
                    "alice"
                } else {
                    "dave"
                });
                let mut group = self.load();
                match engine::apply_commit(&mut group, commit, group_info, &caller) {
                    Ok(outcome) if outcome.epoch == 2 => Self::check_state(
                        &outcome.state.applied_to(&self.state),
                        outcome.epoch,
                        Some(&Self::members_of(&group)?),
                    ),
                    Ok(outcome) => Err(Violation(format!(
                        "a commit at epoch 1 made epoch {}",
                        outcome.epoch
                    ))),
                    Err(error) => self.refused_by(&group, error),
                }
            }
            Input::Welcome => match engine::welcome_recipients(input, &suite()) {
                Ok(_) => Ok(Outcome::Accepted),
                Err(error) => Self::refused(error),
            },
            Input::KeyPackage => match keypackages::validate(input, &did("carol")) {
                Ok(_) => Ok(Outcome::Accepted),
                Err(error) => Self::refused(error),
            },
            Input::Application => match engine::check_application_header(GROUP, 1, input) {
                Ok(()) => Ok(Outcome::Accepted),
                Err(error) => Self::refused(error),
            },
            Input::Leave => {
                let mut group = self.load();
                match engine::apply_self_remove_proposal(&mut group, input, &did("bob")) {
                    Ok(outcome) if outcome.epoch == 1 => Self::check_state(
                        &outcome.state.applied_to(&self.state),
                        1,
                        Some(&Self::members_of(&group)?),
                    ),
                    Ok(outcome) => Err(Violation(format!(
                        "a proposal moved the group to epoch {}",
                        outcome.epoch
                    ))),
                    Err(error) => self.refused_by(&group, error),
                }
            }
        }
    }
}
