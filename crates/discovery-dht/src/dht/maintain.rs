//! Periodic work: expiry, republishing our records and announcements,
//! re-replicating records held for others, refreshing buckets.
//!
//! Re-replication is what a stranger's records could turn into traffic, so
//! it runs at most [`Config::max_replications`](crate::Config::max_replications)
//! queries at once, earliest due first; when one finishes, the next due
//! record gets its turn (at the next [`Dht::handle_timeout`]).

use std::time::Duration;

use super::{Dht, Goal, Origin};
use crate::key::Key;
use crate::record::Record;
use crate::time::Time;

impl Dht {
    /// Looks up a made-up key in every bucket not looked into for `interval`.
    pub(super) fn refresh(&mut self, now: Time, interval: Duration) {
        if self.table.is_empty() {
            return;
        }
        for idx in self.table.stale_buckets(now, interval) {
            let target = self
                .local_key
                .in_bucket(idx, &now.as_millis().to_be_bytes());
            self.start(now, target, Goal::FindNode, Origin::Background);
        }
    }

    pub(super) fn maintain(&mut self, now: Time) {
        self.next_maintenance = Some(now + self.config.maintenance_interval);
        self.store.expire(now);
        // Our own records: re-put until they expire.
        self.published.retain(|_, (rec, _)| rec.expires > now);
        let due: Vec<Record> = self
            .published
            .values_mut()
            .filter(|(_, at)| *at <= now)
            .map(|(rec, at)| {
                *at = now + self.config.republish_interval;
                rec.clone()
            })
            .collect();
        for rec in due {
            let key = rec.dht_key();
            self.start(now, key, Goal::PutValue(rec), Origin::Background);
        }
        // Our provider announcements.
        let due: Vec<Vec<u8>> = self
            .provided
            .values_mut()
            .filter(|(_, at)| *at <= now)
            .map(|(key, at)| {
                *at = now + self.config.provider_republish_interval;
                key.clone()
            })
            .collect();
        for key in due {
            let dht_key = Key::hash(&key);
            self.provide_locally(now, dht_key);
            self.start(now, dht_key, Goal::AddProvider(key), Origin::Background);
        }
        self.replicate(now);
        let interval = self.config.refresh_interval;
        self.refresh(now, interval);
    }

    /// Starts re-replicating records held for others that nobody re-sent
    /// lately, while fewer than `max_replications` run.
    pub(super) fn replicate(&mut self, now: Time) {
        let Some(interval) = self.config.replicate_interval else {
            return;
        };
        let room = self
            .config
            .max_replications
            .saturating_sub(self.replicating);
        for rec in self.store.due_for_replication(now, interval, room) {
            let key = rec.dht_key();
            self.replicating += 1;
            self.start(now, key, Goal::PutValue(rec), Origin::Replication);
        }
    }
}
