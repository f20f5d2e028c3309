//! Leftovers of builds that could not clean up after themselves: the engine was gone when they
//! ended, or they were killed outright (SIGKILL, a power cut). A build removes its container on
//! every exit path it lives to see; when that removal cannot happen, the container stays, and
//! this stage removes it later — at the start of the next build, or with `lxcforge gc`.
//!
//! Staging directories (`<out>/.staging-*`, holding a partial artifact when a build was killed
//! while it exported) carry the same owner record in an `.owner` file, and are collected the
//! same way. A build collects its own project's leftovers (`org.lxcforge.project`); `lxcforge gc --all`
//! those of every project on the engine. Every build container carries an owner label naming
//! the process that made it: host name,
//! boot id, pid namespace, pid and the process's start time (which tells a reused pid apart).
//! A container is removed only when its owner is provably gone: same machine and boot, and no
//! process with that pid and start time; or same host name and created before this boot.
//! Containers of a live build, of another machine (a shared remote engine), of another pid
//! namespace, or from an lxcforge without owner labels are left alone, and `gc` says why.

use crate::engine::{BuildContainer, Engine, EngineError};

/// Who made a build container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub host: String,
    pub boot: String,
    pub pidns: String,
    pub pid: u32,
    /// Start time of the process, in clock ticks after boot (`/proc/<pid>/stat`, field 22).
    pub start: u64,
}

impl Owner {
    /// This process, or None where /proc cannot tell (then containers get no owner label and
    /// are never collected automatically).
    pub fn current() -> Option<Owner> {
        let pid = std::process::id();
        Some(Owner {
            host: read_trimmed("/proc/sys/kernel/hostname")?,
            boot: read_trimmed("/proc/sys/kernel/random/boot_id")?,
            pidns: std::fs::read_link("/proc/self/ns/pid")
                .ok()?
                .to_string_lossy()
                .into_owned(),
            pid,
            start: process_start(pid)?,
        })
    }

    pub fn label(&self) -> String {
        format!(
            "host={};boot={};pidns={};pid={};start={}",
            self.host, self.boot, self.pidns, self.pid, self.start
        )
    }

    pub fn parse(label: &str) -> Option<Owner> {
        let mut o = Owner {
            host: String::new(),
            boot: String::new(),
            pidns: String::new(),
            pid: 0,
            start: 0,
        };
        let mut seen = 0;
        for part in label.split(';') {
            let (k, v) = part.split_once('=')?;
            match k {
                "host" => o.host = v.to_owned(),
                "boot" => o.boot = v.to_owned(),
                "pidns" => o.pidns = v.to_owned(),
                "pid" => o.pid = v.parse().ok()?,
                "start" => o.start = v.parse().ok()?,
                _ => continue,
            }
            seen += 1;
        }
        (seen == 5 && !o.host.is_empty() && !o.boot.is_empty()).then_some(o)
    }
}

fn read_trimmed(path: &str) -> Option<String> {
    let s = std::fs::read_to_string(path).ok()?.trim().to_owned();
    (!s.is_empty()).then_some(s)
}

/// The start time of a running process (clock ticks after boot), or None if there is none.
pub fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// When this machine booted, in unix seconds (`btime` in /proc/stat).
fn boot_time() -> Option<i64> {
    std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Its build is running: never touch it.
    Alive,
    /// Its build is gone, for this reason: remove it.
    Gone(String),
    /// Cannot tell, for this reason: leave it.
    Unknown(String),
}

/// Whether the build that made a container is gone. `me` is this process, `created` the
/// container's creation time and `booted` this machine's boot time (unix seconds);
/// `start_of(pid)` is the start time of a running process on this machine.
pub fn judge(
    owner: Option<&str>,
    created: i64,
    me: &Owner,
    booted: Option<i64>,
    start_of: impl Fn(u32) -> Option<u64>,
) -> Verdict {
    let Some(label) = owner else {
        return Verdict::Unknown("no owner label (made by an older lxcforge)".into());
    };
    let Some(o) = Owner::parse(label) else {
        return Verdict::Unknown(format!("unreadable owner label {label:?}"));
    };
    if o.host != me.host {
        return Verdict::Unknown(format!("made on another machine ({})", o.host));
    }
    if o.boot != me.boot {
        return match booted {
            Some(b) if created < b => Verdict::Gone(format!(
                "its build (pid {}) ran before this machine restarted",
                o.pid
            )),
            _ => Verdict::Unknown("made by another machine of the same name".into()),
        };
    }
    if o.pidns != me.pidns {
        return Verdict::Unknown("made from another pid namespace (inside a container?)".into());
    }
    match start_of(o.pid) {
        Some(s) if s == o.start => Verdict::Alive,
        _ => Verdict::Gone(format!("its build process {} is gone", o.pid)),
    }
}

/// What `sweep` did with one container.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Swept {
    pub name: String,
    pub id: String,
    /// `removed`, `kept` (its build runs, or it cannot be told), `would remove` (dry run), or
    /// `failed` (removal refused).
    pub action: &'static str,
    pub reason: String,
}

/// Removes the build containers whose build is gone: those of the project `project`
/// (`engine::project_id`), or of every project on this engine when None.
pub async fn sweep(
    engine: &Engine,
    project: Option<&str>,
    dry_run: bool,
) -> Result<Vec<Swept>, EngineError> {
    let containers = engine.build_containers().await?;
    let me = Owner::current();
    let booted = boot_time();
    let mut out = Vec::new();
    for BuildContainer {
        id,
        name,
        owner,
        project: theirs,
        created,
    } in containers
    {
        if project.is_some() && theirs.as_deref() != project {
            continue;
        }
        let verdict = match &me {
            Some(me) => judge(owner.as_deref(), created, me, booted, process_start),
            None => Verdict::Unknown("this system has no /proc to tell".into()),
        };
        let (action, reason) = match verdict {
            Verdict::Alive => ("kept", "its build is running".to_owned()),
            Verdict::Unknown(why) => ("kept", why),
            Verdict::Gone(why) if dry_run => ("would remove", why),
            Verdict::Gone(why) => match engine.remove_container(&id).await {
                Ok(()) => ("removed", why),
                Err(e) => ("failed", format!("{why}, but {e}")),
            },
        };
        out.push(Swept {
            name,
            id,
            action,
            reason,
        });
    }
    Ok(out)
}

/// Removes the staging directories in `out_dir` whose build is gone (a build killed while it
/// exported leaves a partial artifact there). One without an owner file is left alone: it is
/// being created, or an older lxcforge made it.
pub fn sweep_staging(out_dir: &std::path::Path, dry_run: bool) -> Vec<Swept> {
    let me = Owner::current();
    let booted = boot_time();
    let mut out = Vec::new();
    for entry in std::fs::read_dir(out_dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with(crate::artifact::STAGING_PREFIX) || !entry.path().is_dir() {
            continue;
        }
        let owner = std::fs::read_to_string(entry.path().join(crate::artifact::OWNER_FILE)).ok();
        let created = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs() as i64);
        let verdict = match (&me, owner) {
            (Some(me), Some(o)) => judge(Some(o.trim()), created, me, booted, process_start),
            (None, _) => Verdict::Unknown("this system has no /proc to tell".into()),
            (_, None) => Verdict::Unknown("no owner file (being created, or older)".into()),
        };
        let (action, reason) = match verdict {
            Verdict::Alive => ("kept", "its build is running".to_owned()),
            Verdict::Unknown(why) => ("kept", why),
            Verdict::Gone(why) if dry_run => ("would remove", why),
            Verdict::Gone(why) => match std::fs::remove_dir_all(entry.path()) {
                Ok(()) => ("removed", why),
                Err(e) => ("failed", format!("{why}, but it cannot be removed: {e}")),
            },
        };
        out.push(Swept {
            name: entry.path().display().to_string(),
            id: String::new(),
            action,
            reason,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> Owner {
        Owner {
            host: "build1".into(),
            boot: "b-1".into(),
            pidns: "pid:[4026531836]".into(),
            pid: 100,
            start: 5000,
        }
    }

    #[test]
    fn dead_builds_staging_is_collected_live_and_unknown_kept() {
        let out = tempfile::tempdir().unwrap();
        let live = crate::artifact::Staging::create(out.path(), "live").unwrap();
        let dead = out.path().join(".staging-dead");
        std::fs::create_dir_all(&dead).unwrap();
        std::fs::write(dead.join("x.tar.gz"), b"partial").unwrap();
        let mut gone = Owner::current().unwrap();
        gone.pid = 999_999_999; // above any pid_max
        std::fs::write(dead.join(".owner"), gone.label()).unwrap();
        let unknown = out.path().join(".staging-old");
        std::fs::create_dir_all(&unknown).unwrap();
        let dry = sweep_staging(out.path(), true);
        assert_eq!(dry.iter().filter(|s| s.action == "would remove").count(), 1);
        assert!(dead.exists());
        let swept = sweep_staging(out.path(), false);
        assert!(!dead.exists());
        assert!(live.dir.exists() && unknown.exists());
        let removed: Vec<_> = swept.iter().filter(|s| s.action == "removed").collect();
        assert_eq!(removed.len(), 1, "{swept:?}");
        assert!(removed[0].name.ends_with(".staging-dead"), "{swept:?}");
        assert!(removed[0].reason.contains("is gone"), "{swept:?}");
    }

    #[test]
    fn labels_round_trip() {
        let o = me();
        assert_eq!(Owner::parse(&o.label()), Some(o));
        assert_eq!(Owner::parse("host=a;pid=1"), None);
        assert_eq!(Owner::parse("garbage"), None);
        let here = Owner::current().expect("/proc on Linux");
        assert_eq!(here.pid, std::process::id());
        assert_eq!(process_start(here.pid), Some(here.start));
    }

    #[test]
    fn only_provably_dead_builds_are_collected() {
        let me = me();
        let other = |f: &dyn Fn(&mut Owner)| {
            let mut o = Owner {
                pid: 42,
                start: 777,
                ..me.clone()
            };
            f(&mut o);
            o.label()
        };
        let running = |pid: u32| (pid == 42).then_some(777);
        let none = |_: u32| None;
        let reused = |pid: u32| (pid == 42).then_some(999);
        let same = other(&|_| {});
        assert_eq!(
            judge(Some(&same), 0, &me, Some(10), running),
            Verdict::Alive
        );
        assert!(matches!(
            judge(Some(&same), 0, &me, Some(10), none),
            Verdict::Gone(w) if w.contains("process 42 is gone")
        ));
        // The pid now belongs to another process: the build is gone all the same.
        assert!(matches!(
            judge(Some(&same), 0, &me, Some(10), reused),
            Verdict::Gone(_)
        ));
        let elsewhere = other(&|o| o.host = "build2".into());
        assert!(matches!(
            judge(Some(&elsewhere), 0, &me, Some(10), none),
            Verdict::Unknown(w) if w.contains("build2")
        ));
        let before_reboot = other(&|o| o.boot = "b-0".into());
        assert!(matches!(
            judge(Some(&before_reboot), 5, &me, Some(10), none),
            Verdict::Gone(w) if w.contains("restarted")
        ));
        // Same name, other boot, but made after this boot: another machine of that name.
        assert!(matches!(
            judge(Some(&before_reboot), 50, &me, Some(10), none),
            Verdict::Unknown(_)
        ));
        let in_container = other(&|o| o.pidns = "pid:[1]".into());
        assert!(matches!(
            judge(Some(&in_container), 0, &me, Some(10), none),
            Verdict::Unknown(_)
        ));
        assert!(matches!(
            judge(None, 0, &me, Some(10), none),
            Verdict::Unknown(_)
        ));
    }
}
