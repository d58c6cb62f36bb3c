//! Parsed MLS groups kept between requests, so that a commit does not parse
//! the whole group state (at 1,000 members most of a commit's time) when
//! this replica handled the group's previous change.
//!
//! The database stays the source of truth. Every write of a group's state
//! gives the conversation row a new `state_version` (from a sequence, never
//! reused); an entry is the group parsed at one version, and a commit uses
//! it only if the row it has locked still has that version, so a change
//! made by another replica (or a rolled-back transaction) is never missed.
//! An entry is taken out while a request works on it and put back only
//! after the request's transaction committed, with the version it wrote.

use std::sync::Mutex;

use hashlink::LruCache;

use crate::groups::engine::LoadedGroup;

/// The default memory budget: a 1,000-member group takes about 1 MB.
pub const DEFAULT_BUDGET_BYTES: usize = 64 << 20;

/// Parsed groups by group id, least recently used evicted first once their
/// approximate size passes the budget.
pub struct GroupCache {
    budget: usize,
    entries: Mutex<Entries>,
}

struct Entries {
    by_group: LruCache<Vec<u8>, Entry>,
    bytes: usize,
}

struct Entry {
    version: i64,
    size: usize,
    group: LoadedGroup,
}

impl GroupCache {
    pub fn new(budget_bytes: usize) -> Self {
        Self {
            budget: budget_bytes,
            entries: Mutex::new(Entries {
                by_group: LruCache::new_unbounded(),
                bytes: 0,
            }),
        }
    }

    /// Takes out the group parsed at `version`, if held. An entry at any
    /// other version is stale and dropped.
    pub fn take(&self, group_id: &[u8], version: i64) -> Option<LoadedGroup> {
        let mut entries = self.lock();
        let entry = entries.by_group.remove(group_id)?;
        entries.bytes -= entry.size;
        (entry.version == version).then_some(entry.group)
    }

    /// Keeps `group`, parsed at (or brought up to) the stored `version`.
    pub fn put(&self, group_id: &[u8], version: i64, group: LoadedGroup) {
        let size = group.approximate_size();
        if size > self.budget {
            return;
        }
        let mut entries = self.lock();
        if let Some(old) = entries.by_group.insert(
            group_id.to_vec(),
            Entry {
                version,
                size,
                group,
            },
        ) {
            entries.bytes -= old.size;
        }
        entries.bytes += size;
        while entries.bytes > self.budget {
            let Some((_, evicted)) = entries.by_group.remove_lru() else {
                break;
            };
            entries.bytes -= evicted.size;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // A panic while holding the lock leaves consistent entries (every
        // mutation above is complete or not started), so keep using them.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Default for GroupCache {
    fn default() -> Self {
        Self::new(DEFAULT_BUDGET_BYTES)
    }
}
