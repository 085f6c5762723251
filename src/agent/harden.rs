//! Keeping the agent's memory to itself: no core dumps, no ptrace or /proc/PID/mem by other
//! processes of the user, no swapping.

use nix::libc;
use nix::sys::mman::{mlockall, MlockAllFlags};
use nix::sys::resource::{setrlimit, Resource};

use super::AgentError;

/// Applies every protection, or fails: the agent does not run with its keys swappable.
pub fn protect_memory() -> Result<(), AgentError> {
    setrlimit(Resource::RLIMIT_CORE, 0, 0)
        .map_err(|e| AgentError::Start(format!("cannot turn off core dumps: {e}")))?;
    nix::sys::prctl::set_dumpable(false)
        .map_err(|e| AgentError::Start(format!("cannot mark the agent as not dumpable: {e}")))?;
    lock_memory()
}

/// Locks every page, present and future, in memory. Pages are locked as they are touched
/// (MCL_ONFAULT) where the kernel knows that, so the locked amount is what the agent really
/// uses rather than everything it has mapped.
fn lock_memory() -> Result<(), AgentError> {
    let all = MlockAllFlags::MCL_CURRENT | MlockAllFlags::MCL_FUTURE;
    let on_fault = all | MlockAllFlags::from_bits_retain(libc::MCL_ONFAULT);
    mlockall(on_fault).or_else(|_| mlockall(all)).map_err(|e| {
        AgentError::Start(format!(
            "cannot lock the agent's memory against swapping ({e}).\n\
             Raise the locked-memory limit (ulimit -l, or LimitMEMLOCK= for a systemd service) \
             to at least 64 MiB, or use --no-agent."
        ))
    })
}
