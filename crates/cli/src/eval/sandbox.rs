//! Where `bantam eval --kind code` runs a model's code: one Python process per completion,
//! in its own scratch directory, with every wall the kernel offers around it.
//!
//! - **Time:** a wall-clock deadline, then the whole process group (and with namespaces the
//!   whole PID namespace) is killed; RLIMIT_CPU as a second stop.
//! - **Memory and output:** RLIMIT_AS, RLIMIT_FSIZE (what the code prints goes to a file in
//!   the scratch directory), RLIMIT_NOFILE, no core files.
//! - **Processes:** a new session and process group; as root, a new PID namespace (its
//!   processes all die with its first) and the unprivileged `nobody` user with RLIMIT_NPROC,
//!   so a fork bomb meets a ceiling.
//! - **Network:** a new network namespace (no interfaces up) and Landlock's TCP rules.
//! - **Files:** Landlock: the system's read-only directories and Python's own, read and
//!   execute; the scratch directory, anything; everything else (the user's home, /tmp),
//!   nothing. Signals and abstract sockets are scoped to the sandbox where the kernel can.
//!
//! Each wall is used where this kernel and user allow it; [`Sandbox::walls`] names those
//! in force, and the eval summary records them. The program inside is `sandbox.py`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const DRIVER: &str = include_str!("sandbox.py");

/// How long and how much one run may take.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub timeout: Duration,
    pub memory_mib: u64,
    pub output_mib: u64,
}

/// How a completion becomes a program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Assemble {
    /// The prompt, then the completion (HumanEval's original harness).
    Append,
    /// The code of a chat answer, sanitised as EvalPlus does.
    Extract,
}

/// One completion to check.
pub struct Job<'a> {
    pub assemble: Assemble,
    pub prompt: &'a str,
    pub completion: &'a str,
    pub test: &'a str,
    pub entry_point: &'a str,
}

/// What running it showed.
#[derive(Clone, Debug)]
pub struct Verdict {
    pub passed: bool,
    /// Why it failed: the exception, the limit it hit, or how it ended.
    pub reason: Option<String>,
    /// The program that ran (before the tests).
    pub solution: String,
}

/// The walls this kernel and user allow; see the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Walls {
    namespaces: bool,
    nobody: bool,
    /// The Landlock ABI version, 0 without Landlock.
    landlock: i32,
}

pub struct Sandbox {
    python: PathBuf,
    /// Directories the code may read and execute from.
    readable: Vec<PathBuf>,
    root: PathBuf,
    limits: Limits,
    walls: Walls,
    next: AtomicU64,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

impl Sandbox {
    /// Find Python (`$BANTAM_PYTHON`, else `python3` on the PATH, else the system's
    /// /usr/bin/python3) and the strongest walls that let it start here. As root, code runs
    /// as `nobody`, so a Python that `nobody` cannot reach (one under /root) gives way to
    /// the system's.
    pub fn new(limits: Limits) -> anyhow::Result<Sandbox> {
        if !cfg!(target_os = "linux") {
            anyhow::bail!("running code needs Linux (its sandbox is built from Linux namespaces, rlimits and Landlock)");
        }
        let named = std::env::var_os("BANTAM_PYTHON").map(PathBuf::from);
        let mut pythons: Vec<PathBuf> = Vec::new();
        match &named {
            Some(p) => pythons.push(p.clone()),
            None => {
                pythons.extend(on_path("python3"));
                pythons.push(PathBuf::from("/usr/bin/python3"));
            }
        }
        pythons.dedup();
        let found: Vec<(PathBuf, Vec<PathBuf>)> = pythons.iter().filter_map(|p| Some((p.clone(), python_dirs(p)?))).collect();
        if found.is_empty() {
            anyhow::bail!("cannot run {} (set $BANTAM_PYTHON to a Python 3)", pythons.first().map_or("python3".into(), |p| p.display().to_string()));
        }
        let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        let root = std::env::temp_dir().join(format!("bantam-sandbox-{}-{stamp}", std::process::id()));
        std::fs::create_dir(&root)?;
        set_mode(&root, 0o711)?;
        let none = Walls { namespaces: false, nobody: false, landlock: 0 };
        let mut sandbox = Sandbox { python: PathBuf::new(), readable: Vec::new(), root, limits, walls: none, next: AtomicU64::new(0) };
        let root_user = unsafe { libc::geteuid() } == 0;
        let abi = landlock_abi();
        let mut tried = Vec::new();
        for walls in [
            Walls { namespaces: root_user, nobody: root_user, landlock: abi },
            Walls { namespaces: false, nobody: root_user, landlock: abi },
            Walls { namespaces: root_user, nobody: false, landlock: abi },
            Walls { namespaces: false, nobody: false, landlock: abi },
            none,
        ] {
            if tried.contains(&walls) {
                continue;
            }
            tried.push(walls);
            for (python, readable) in &found {
                (sandbox.walls, sandbox.python, sandbox.readable) = (walls, python.clone(), readable.clone());
                let probe = sandbox.run(&Job {
                    assemble: Assemble::Append,
                    prompt: "def f():\n    return 1\n",
                    completion: "",
                    test: "assert f() == 1",
                    entry_point: "f",
                });
                if probe.passed {
                    return Ok(sandbox);
                }
            }
        }
        anyhow::bail!("{} does not run in the sandbox", found[0].0.display())
    }

    /// The walls in force, for the report.
    pub fn walls(&self) -> String {
        let w = self.walls;
        let mut out = vec![
            format!("python {}", self.python.display()),
            format!(
                "rlimits (cpu {}s, memory {} MiB, output {} MiB{})",
                self.limits.timeout.as_secs() + 1,
                self.limits.memory_mib,
                self.limits.output_mib,
                if w.nobody { ", 128 processes" } else { "" }
            ),
        ];
        out.push("own process group, killed at the deadline".into());
        if w.namespaces {
            out.push("pid and network namespaces".into());
        }
        if w.nobody {
            out.push("user nobody".into());
        }
        if w.landlock > 0 {
            out.push(format!("landlock v{} (files{})", w.landlock, if w.landlock >= 4 { ", tcp" } else { "" }));
        }
        out.join(", ")
    }

    /// Run one completion and its tests.
    pub fn run(&self, job: &Job) -> Verdict {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let dir = self.root.join(n.to_string());
        let verdict = match self.run_in(&dir, job) {
            Ok(v) => v,
            Err(e) => Verdict { passed: false, reason: Some(format!("the sandbox failed: {e}")), solution: String::new() },
        };
        let _ = std::fs::remove_dir_all(&dir);
        verdict
    }

    fn run_in(&self, dir: &Path, job: &Job) -> std::io::Result<Verdict> {
        std::fs::create_dir(dir)?;
        set_mode(dir, 0o700)?;
        let (uid, gid) = (65534, 65534);
        if self.walls.nobody {
            std::os::unix::fs::chown(dir, Some(uid), Some(gid))?;
        }
        let ruleset = if self.walls.landlock > 0 { Some(landlock_ruleset(self.walls.landlock, &self.readable, dir)?) } else { None };
        let nonce = format!("{:016x}{:016x}", random(), random());
        let input = serde_json::json!({
            "nonce": nonce,
            "style": if job.assemble == Assemble::Extract { "evalplus" } else { "complete" },
            "prompt": job.prompt,
            "completion": job.completion,
            "test": job.test,
            "entry_point": job.entry_point,
        })
        .to_string();
        let mut cmd = Command::new(&self.python);
        cmd.args(["-s", "-c", DRIVER])
            .current_dir(dir)
            .env_clear()
            .env("HOME", dir)
            .env("TMPDIR", dir)
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("LANG", "C.UTF-8")
            .env("PYTHONHASHSEED", "0")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let setup = Setup {
            walls: self.walls,
            uid,
            gid,
            cpu: self.limits.timeout.as_secs() + 1,
            memory: self.limits.memory_mib << 20,
            output: self.limits.output_mib << 20,
            ruleset: ruleset.as_ref().map(std::os::fd::AsRawFd::as_raw_fd),
        };
        // SAFETY: `Setup::apply` makes only async-signal-safe calls (no allocation, no locks).
        unsafe { std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || setup.apply()) };
        let started = Instant::now();
        let mut child = cmd.spawn()?;
        drop(ruleset);
        let group = child.id() as libc::pid_t;
        if let Some(mut stdin) = child.stdin.take() {
            let _ = std::io::Write::write_all(&mut stdin, input.as_bytes());
        }
        let mut stdout = child.stdout.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut kept = Vec::new();
            let mut buf = [0u8; 8192];
            while let Ok(n @ 1..) = stdout.read(&mut buf) {
                if kept.len() < 1 << 20 {
                    kept.extend_from_slice(&buf[..n]);
                }
            }
            let _ = tx.send(kept);
        });
        let mut timed_out = false;
        let status = loop {
            if let Some(s) = child.try_wait()? {
                break s;
            }
            if started.elapsed() > self.limits.timeout {
                timed_out = true;
                // SAFETY: signals the group the child leads, created by its setsid.
                unsafe { libc::killpg(group, libc::SIGKILL) };
                break child.wait()?;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        // Whatever the code left running in its group goes too.
        // SAFETY: as above; ESRCH when the group is gone already.
        unsafe { libc::killpg(group, libc::SIGKILL) };
        let out = rx.recv_timeout(Duration::from_secs(2)).unwrap_or_default();
        let mut solution = String::new();
        let mut verdict = None;
        for line in String::from_utf8_lossy(&out).lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
            if v["nonce"] != nonce.as_str() {
                continue;
            }
            if let Some(s) = v["solution"].as_str() {
                solution = s.to_string();
            } else if let Some(p) = v["passed"].as_bool() {
                verdict = Some((p, v["reason"].as_str().map(str::to_string)));
            }
        }
        let (passed, reason) = match verdict {
            Some(v) if !timed_out => v,
            _ => {
                let how = if timed_out {
                    format!("timed out after {:.0} s", self.limits.timeout.as_secs_f64())
                } else {
                    use std::os::unix::process::ExitStatusExt;
                    match (status.code(), status.signal()) {
                        (_, Some(libc::SIGXCPU)) | (Some(152), _) => "over the CPU time limit".to_string(),
                        (_, Some(s)) => format!("killed by signal {s}"),
                        (Some(c), _) if c > 128 => format!("killed by signal {}", c - 128),
                        (Some(c), _) => format!("exited with status {c} before the tests finished"),
                        (None, None) => "ended before the tests finished".to_string(),
                    }
                };
                (false, Some(with_output(how, &dir.join("output.txt"))))
            }
        };
        Ok(Verdict { passed, reason, solution })
    }
}

/// `name` found on the PATH, made absolute.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|d| d.join(name)).find(|p| p.is_file())
}

/// The directories a Python reads from (its prefixes and its executable's directory), or
/// `None` when it does not run.
fn python_dirs(python: &Path) -> Option<Vec<PathBuf>> {
    let out = Command::new(python)
        .args(["-I", "-c", "import sys, os; print(sys.prefix); print(sys.base_prefix); print(sys.exec_prefix); print(os.path.realpath(sys.executable))"])
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let mut dirs: Vec<PathBuf> = ["/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin", "/etc"].iter().map(PathBuf::from).collect();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut lines: Vec<PathBuf> = text.lines().map(PathBuf::from).collect();
    if let Some(exe) = lines.pop() {
        dirs.extend(exe.parent().map(Path::to_path_buf));
        dirs.push(exe);
    }
    dirs.extend(lines);
    dirs.push(python.to_path_buf());
    Some(dirs)
}

/// `how`, and the end of what the code printed (read without following links).
fn with_output(how: String, path: &Path) -> String {
    use std::os::unix::fs::OpenOptionsExt;
    let Ok(f) = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path) else { return how };
    if !f.metadata().is_ok_and(|m| m.is_file()) {
        return how;
    }
    let mut text = String::new();
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let mut f = f;
    let _ = std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(len.saturating_sub(300)));
    let _ = (&mut f).take(300).read_to_string(&mut text);
    let tail = text.trim();
    if tail.is_empty() {
        how
    } else {
        format!("{how}: {tail}")
    }
}

fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))
}

fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    h.finish()
}

/// What the child does between fork and exec, copied into it.
#[derive(Clone, Copy)]
struct Setup {
    walls: Walls,
    uid: libc::uid_t,
    gid: libc::gid_t,
    cpu: u64,
    memory: u64,
    output: u64,
    ruleset: Option<i32>,
}

impl Setup {
    /// Runs in the forked child: async-signal-safe calls only.
    fn apply(self) -> std::io::Result<()> {
        let fail = |r: libc::c_long| if r < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) };
        // SAFETY: plain system calls on this process, with valid arguments; no allocation.
        unsafe {
            fail(libc::setsid() as libc::c_long)?;
            if self.walls.namespaces {
                fail(libc::unshare(libc::CLONE_NEWPID | libc::CLONE_NEWNET) as libc::c_long)?;
                // The PID namespace holds this process's children: fork, and let the child
                // (the namespace's first process) go on to exec while this one waits for it.
                let pid = libc::fork();
                fail(pid as libc::c_long)?;
                if pid > 0 {
                    // Hold nothing the parent waits on: not the pipes, and not the
                    // descriptor through which the parent learns that exec happened.
                    libc::close(0);
                    libc::close(1);
                    if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) < 0 {
                        for fd in 3..4096 {
                            libc::close(fd);
                        }
                    }
                    let mut status = 0;
                    while libc::waitpid(pid, &mut status, 0) < 0 && *libc::__errno_location() == libc::EINTR {}
                    let code = if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { 128 + libc::WTERMSIG(status) };
                    libc::_exit(code);
                }
            }
            let limit = |resource, soft: u64, hard: u64| fail(libc::setrlimit(resource, &libc::rlimit { rlim_cur: soft, rlim_max: hard }) as libc::c_long);
            limit(libc::RLIMIT_CPU, self.cpu, self.cpu + 1)?;
            limit(libc::RLIMIT_AS, self.memory, self.memory)?;
            limit(libc::RLIMIT_FSIZE, self.output, self.output)?;
            limit(libc::RLIMIT_CORE, 0, 0)?;
            limit(libc::RLIMIT_NOFILE, 256, 256)?;
            if self.walls.nobody {
                limit(libc::RLIMIT_NPROC, 128, 128)?;
                fail(libc::setgroups(0, std::ptr::null()) as libc::c_long)?;
                fail(libc::setgid(self.gid) as libc::c_long)?;
                fail(libc::setuid(self.uid) as libc::c_long)?;
            }
            fail(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) as libc::c_long)?;
            if let Some(fd) = self.ruleset {
                fail(libc::syscall(libc::SYS_landlock_restrict_self, fd, 0u32))?;
            }
        }
        Ok(())
    }
}

// Landlock (linux/landlock.h).
const FS_EXECUTE: u64 = 1 << 0;
const FS_WRITE_FILE: u64 = 1 << 1;
const FS_READ_FILE: u64 = 1 << 2;
const FS_READ_DIR: u64 = 1 << 3;
const FS_TRUNCATE: u64 = 1 << 14;
const FS_IOCTL_DEV: u64 = 1 << 15;

#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
    handled_access_net: u64,
    scoped: u64,
}

#[repr(C, packed)]
struct PathBeneath {
    allowed_access: u64,
    parent_fd: i32,
}

/// The kernel's Landlock ABI version, 0 without Landlock.
fn landlock_abi() -> i32 {
    // SAFETY: LANDLOCK_CREATE_RULESET_VERSION takes no attributes.
    let v = unsafe { libc::syscall(libc::SYS_landlock_create_ruleset, std::ptr::null::<RulesetAttr>(), 0usize, 1u32) };
    v.max(0) as i32
}

/// A ruleset for one run: `readable` read and executed, `scratch` anything, a few devices
/// read and written; no TCP; signals and abstract sockets kept inside.
fn landlock_ruleset(abi: i32, readable: &[PathBuf], scratch: &Path) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let fs_all: u64 = match abi {
        1 => (1 << 13) - 1,
        2 => (1 << 14) - 1,
        3 | 4 => (1 << 15) - 1,
        _ => (1 << 16) - 1,
    };
    let attr = RulesetAttr { handled_access_fs: fs_all, handled_access_net: if abi >= 4 { 0b11 } else { 0 }, scoped: if abi >= 6 { 0b11 } else { 0 } };
    let size = match abi {
        1..=3 => 8,
        4 | 5 => 16,
        _ => std::mem::size_of::<RulesetAttr>(),
    };
    // SAFETY: `attr` is valid for `size` bytes.
    let fd = unsafe { libc::syscall(libc::SYS_landlock_create_ruleset, &attr as *const RulesetAttr, size, 0u32) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new descriptor this function owns.
    let ruleset = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) };
    let file_rights = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV;
    let mut rules: Vec<(PathBuf, u64)> = readable.iter().map(|p| (p.clone(), FS_EXECUTE | FS_READ_FILE | FS_READ_DIR)).collect();
    rules.push((scratch.to_path_buf(), fs_all));
    for dev in ["/dev/null", "/dev/zero", "/dev/urandom", "/dev/random"] {
        rules.push((PathBuf::from(dev), FS_READ_FILE | FS_WRITE_FILE | FS_TRUNCATE | FS_IOCTL_DEV));
    }
    for (path, rights) in rules {
        let Ok(f) = std::fs::File::open(&path).or_else(|_| {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new().read(true).custom_flags(libc::O_PATH).open(&path)
        }) else {
            continue;
        };
        let is_dir = f.metadata().is_ok_and(|m| m.is_dir());
        let rights = if is_dir { rights } else { rights & file_rights } & fs_all;
        let rule = PathBeneath { allowed_access: rights, parent_fd: std::os::fd::AsRawFd::as_raw_fd(&f) };
        // SAFETY: `rule` is a valid landlock_path_beneath_attr.
        let r = unsafe { libc::syscall(libc::SYS_landlock_add_rule, std::os::fd::AsRawFd::as_raw_fd(&ruleset), 1i32, &rule as *const PathBeneath, 0u32) };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(ruleset)
}
