//! The servers' processes: started in their own process group with their output to a log,
//! tied to the runner's life on Linux, stopped as a group (SIGTERM, then SIGKILL); ports
//! waited free.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Start `argv` with `env` added, in its own process group (stopped as a group), stdout and
/// stderr to `log`.
pub(super) fn spawn_logged(
    argv: &[String],
    env: &[(String, String)],
    log: &Path,
) -> Result<Child, String> {
    let out = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .envs(env.iter().cloned())
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    stop_with_runner(&mut cmd);
    cmd.spawn()
        .map_err(|e| format!("cannot start {}: {e}", argv[0]))
}

/// Run `argv` to its end (the point's bench: in the runner's process group, so an interrupt
/// reaches it), stdout and stderr to `log`.
pub(super) fn run_logged(argv: &[String], log: &Path) -> Result<std::process::ExitStatus, String> {
    let out = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .status()
        .map_err(|e| format!("cannot run bench ({}): {e}", argv[0]))
}

/// How long a point waits for its port to be released (by the previous point's server, or by a
/// server of a killed run that is still shutting down) before it fails.
pub(super) const PORT_FREE_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) fn wait_port_free(port: u16, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    while std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
        if Instant::now() >= deadline {
            return Err(format!(
                "port {port} is taken (another server still running? `ss -ltnp | grep :{port}` \
                 names it; or move vllm.port_base)"
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// On Linux, the server gets SIGTERM when the runner dies (killed, Ctrl-C), so no `vllm serve`
/// is left holding GPUs and ports after a runner is gone; re-running then finds them free.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn stop_with_runner(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    let runner = nix::unistd::getpid();
    // SAFETY: the hook runs in the forked child before exec; it makes only async-signal-safe
    // system calls (prctl, getppid) and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)?;
            // The runner may have died between fork and prctl.
            if nix::unistd::getppid() != runner {
                return Err(nix::errno::Errno::ESRCH.into());
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn stop_with_runner(_cmd: &mut Command) {}

/// Stop the server: SIGTERM its process group, wait `grace`, then SIGKILL the group. Returns how
/// it went away, for the point's row.
pub(super) fn stop(child: &mut Child, grace: Duration) -> String {
    use nix::sys::signal::{killpg, Signal};
    use nix::unistd::Pid;
    let pgid = Pid::from_raw(child.id() as i32);
    if let Ok(Some(status)) = child.try_wait() {
        let _ = killpg(pgid, Signal::SIGKILL);
        return format!("exited by itself ({status})");
    }
    let _ = killpg(pgid, Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            // the leader is gone; make sure its group is too
            let _ = killpg(pgid, Signal::SIGKILL);
            return "exited after SIGTERM".into();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = killpg(pgid, Signal::SIGKILL);
    let _ = child.wait();
    format!("SIGKILL after {} s (SIGTERM ignored)", grace.as_secs_f64())
}
