//! Cancelling a long kernel computation from another thread (Ctrl-C in the Python
//! package): the caller keeps a [`Cancel`] and sets it; the engine checks it between
//! tiles, and inside a tile between parameters (structured), samples (Jacobian) and
//! columns (NTK-vector products) of graph networks, and returns
//! [`EmpiricalError::Cancelled`].

use crate::error::{EmpiricalError, Result};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A cancellation flag shared between the caller and the engine; the default one can
/// never be set (no check costs more than a branch).
#[derive(Clone, Debug, Default)]
pub struct Cancel(Option<Arc<AtomicBool>>);

/// Every flag compares equal: what a computation is (a tile plan, its options) does not
/// depend on who may cancel it.
impl PartialEq for Cancel {
    fn eq(&self, _: &Cancel) -> bool {
        true
    }
}

impl Eq for Cancel {}

impl Cancel {
    /// A flag that [`Cancel::cancel`] can set (clones share it).
    pub fn new() -> Cancel {
        Cancel(Some(Arc::new(AtomicBool::new(false))))
    }

    /// Asks the computations holding this flag to stop at their next check.
    pub fn cancel(&self) {
        if let Some(f) = &self.0 {
            f.store(true, Ordering::Relaxed);
        }
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.as_ref().is_some_and(|f| f.load(Ordering::Relaxed))
    }

    /// `Err(Cancelled)` once the flag is set.
    pub fn check(&self) -> Result<()> {
        if self.is_cancelled() {
            Err(EmpiricalError::Cancelled)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_the_flag_and_the_default_never_cancels() {
        let c = Cancel::new();
        let d = c.clone();
        assert!(d.check().is_ok());
        c.cancel();
        assert!(matches!(d.check(), Err(EmpiricalError::Cancelled)));
        let none = Cancel::default();
        none.cancel();
        assert!(none.check().is_ok());
    }
}
