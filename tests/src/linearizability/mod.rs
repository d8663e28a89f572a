//! Operation histories and a linearizability checker for per-name registers with
//! compare-and-set and versions (`docs/design.md`, "Properties the tests hold").
//!
//! - [`Recorder`] is shared by the clients of a campaign: each operation is recorded with
//!   [`Recorder::invoke`] before it is sent and [`Recorder::complete`] (or
//!   [`Recorder::unknown`]) when its answer (or a timeout) arrives. Times are nanoseconds on
//!   one monotonic clock from the recorder's origin. Operations never completed count as
//!   unknown.
//! - [`check`] (and [`check_report`]) decides whether a [`History`] is linearizable. Names are
//!   independent registers, so the history is partitioned by name and each part is checked
//!   on its own with the Wing–Gong / Lowe algorithm (WGL), memoizing the visited
//!   (set of linearized operations, model state) pairs as in Porcupine.
//!
//! # The model
//!
//! Each name holds nothing or one value with a version; versions are Raft log indexes, so
//! every write that takes effect gets a version strictly greater than every version given
//! before it (in linearization order).
//!
//! - `Put`/`Delete` answered `Written{v}`: needs `v` > every earlier version; the name then
//!   holds the value at `v` (a delete: nothing).
//! - `Cas{expected, ..}` answered `Written{v}`: as a put, and the current version (0 when
//!   absent) must be `expected`. Answered `Conflict{current}`: the current version is
//!   `current` (≠ `expected`), nothing changes.
//! - `Read` answered `Value{v, x}` / `NotFound`: the name holds exactly that.
//! - `Failed` (a definite refusal) had no effect; such operations are ignored.
//! - An operation whose outcome is unknown (a timeout, a lost connection: `complete_ns` is
//!   `None` or the output is [`Output::Unknown`]) may take effect at any instant after its
//!   invoke, or never. Its version is then unknown too: the model keeps the smallest
//!   version consistent with what was seen so far, and pins it when a read or a conflict
//!   observes it. Unknown reads are ignored.
//!
//! Two events at the same instant count as concurrent. The checker is deterministic for
//! a given history and budget (unless [`Budget::max_time`] is set and reached).
//!
//! # Cost
//!
//! The search is exponential in the worst case; prunings that lose no linearization (see
//! `search`) keep it near one state per operation on realistic histories: 5 000
//! operations on one name with 16 concurrent clients and 5% of writes timing out are
//! accepted, or rejected with a planted stale read, in about 10 000 states and well under
//! a second unoptimized. What stays expensive is many writes of unknown outcome that no
//! read identifies combined with compare-and-sets that saw versions no read or
//! acknowledgement explains: any of those writes could have been the one seen. When the
//! budget runs out the answer is [`Outcome::Unknown`], never a guess.
//!
//! # Layout
//!
//! - `history`: [`Input`], [`Output`], [`Operation`], [`History`] and the [`Recorder`].
//! - `report`: [`check`], [`check_report`], [`Budget`], [`Outcome`] and the [`Report`];
//!   the words a violation is explained in.
//! - `model`: the register model (state, one step) the checker applies operations to.
//! - `prepare`: one name's operations validated and converted, the pre-check for
//!   impossible reads, and the hints that let the search prune.
//! - `search`: the search for a linearization itself.

mod history;
mod model;
mod prepare;
mod report;
mod search;

pub use history::{History, Input, OpId, Operation, Output, Recorder};
pub use report::{check, check_report, Budget, NameReport, Outcome, Report};

#[cfg(test)]
mod tests;
