//! The one folder that speaks the Redis module API (`raw::` and `unsafe`), apart
//! from lib.rs's registration. It implements the [`crate::store`] seam over the
//! module API ([`keyspace::ModuleKeyspace`], and the ways a run takes holds of
//! the Redis lock: a blocked client's job, the main thread, a detached context),
//! writes replies, logs, and documents the commands.
//!
//! - `keyspace`: reads (NOTOUCH, MGET per slice, ZSET windows), scans, and the
//!   [`crate::store::Keyspace`] implementation;
//! - `writes`: every write, replicated, only on a primary and not while paused;
//! - `blocking`: a blocked client and the job that answers it exactly once;
//! - `detached`: the scheduler's context on `consistency.db`;
//! - `key_events`: keyspace and server events feeding CHECK CHANGED's dirty ids
//!   and watched rules' samples;
//! - `info`: the `INFO consistency` section, with one dict field per rule;
//! - `respond`: a [`crate::reply::Reply`] tree written to a client;
//! - `logging`: the one place that writes to the Redis log, with a constant format;
//! - `cluster_view`: this node's slots, read from CLUSTER SLOTS;
//! - `command_docs`: COMMAND DOCS (7.0+);
//! - `test_hooks`: CONSISTENCY.DEBUG, only with the `test-hooks` feature;
//! - `allocator`: the global allocator, counting the module's working memory.

pub mod allocator;
pub mod blocking;
pub mod cluster_view;
pub mod command_docs;
pub mod detached;
pub mod info;
pub mod key_events;
pub mod keyspace;
pub mod logging;
pub mod respond;
pub mod test_hooks;
pub mod writes;
