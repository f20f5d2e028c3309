//! Every rule that decides what goes into a template and how it is written, with the reason for
//! it. The rest of `pack` only moves bytes; when a template looks wrong, this is the file to read.
//!
//! Paths here are normalized member paths (no `./`, no trailing `/`, see `member::normalize_path`).

use super::member::{Kind, Member, Meta};

// ---------------------------------------------------------------------------------------------
// Header normalization
// ---------------------------------------------------------------------------------------------

/// Docker (Go's `archive/tar`) leaves the file-type bits in the mode field (`0o100755`).
/// Tar's mode field holds permission bits only; keep setuid/setgid/sticky, drop the type.
pub const MODE_MASK: u32 = 0o7777;

/// The root entry `./` is always written first as 0755 root:root, like Proxmox's own templates:
/// extraction applies it to the container's rootfs directory, and an odd mode there (Docker's
/// rootfs is whatever the storage driver made it) would break logins and services.
pub(crate) fn root_meta(epoch: u64) -> Meta {
    Meta {
        mode: 0o755,
        uid: 0,
        gid: 0,
        mtime: epoch,
    }
}

/// Modification times are clamped to SOURCE_DATE_EPOCH: files touched by the build get the
/// epoch, older files keep their time, and the output does not depend on when the build ran.
pub fn clamp_mtime(mtime: u64, epoch: u64) -> u64 {
    mtime.min(epoch)
}

/// Owners are written as numbers only (uname/gname left empty): Proxmox extracts with
/// `--numeric-owner`, and the build host's user database says nothing about the container's.
pub const OWNER_NAME: &[u8] = b"";

/// Which PAX records are carried over.
/// * `SCHILY.xattr.security.capability`: file capabilities (ping, …); Proxmox restores it
///   (`--xattrs-include=security.capability`).
/// * `SCHILY.xattr.user.*`: restored by Proxmox (`--xattrs-include=user.*`).
/// * `SCHILY.acl.access` / `SCHILY.acl.default`: POSIX ACLs, restored by `--acls`.
///
/// Everything else is dropped: other xattr namespaces are never restored by Proxmox
/// (`trusted.*` would carry overlayfs internals such as `trusted.overlay.opaque`, i.e. Docker
/// traces; `security.selinux` labels belong to the build host), and time/owner-name records are
/// replaced by the rules above.
pub fn pax_key_wanted(key: &[u8]) -> bool {
    key.starts_with(b"SCHILY.xattr.user.")
        || key == b"SCHILY.xattr.security.capability"
        || key == b"SCHILY.acl.access"
        || key == b"SCHILY.acl.default"
}

/// Proxmox's default unprivileged id map is `0:100000:65536`: an owner id above 65535 cannot be
/// mapped, the chown fails and so does `pct create`. Such ids are written as they are (GNU
/// base-256 when they do not fit in octal) but reported, since changing ownership silently would
/// be worse.
pub const MAX_UNPRIVILEGED_ID: u64 = 65535;

pub(crate) fn id_warning(m: &Member) -> Option<String> {
    let Meta { uid, gid, .. } = m.meta;
    (uid > MAX_UNPRIVILEGED_ID || gid > MAX_UNPRIVILEGED_ID).then(|| {
        format!(
            "{} is owned by {uid}:{gid}; ids above {MAX_UNPRIVILEGED_ID} cannot be mapped in an unprivileged container",
            display(&m.archive_name())
        )
    })
}

// ---------------------------------------------------------------------------------------------
// Docker leftovers
// ---------------------------------------------------------------------------------------------

/// `/etc/hosts` written when the image only has Docker's empty stub: the usual Debian defaults.
/// Proxmox adds its own section (hostname, `127.0.1.1`) at every start.
pub const HOSTS_DEFAULT: &[u8] = b"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n";
/// `/etc/hostname` default; Proxmox writes the CT's name at every start.
pub const HOSTNAME_DEFAULT: &[u8] = b"localhost\n";
/// `/etc/resolv.conf` default: empty. Proxmox replaces it with the CT's DNS settings at every
/// start, and an empty file means "use the resolver's defaults" until then.
pub const RESOLV_CONF_DEFAULT: &[u8] = b"";

/// Files Docker's init layer puts into every container as empty 0755 bind-mount targets (moby
/// `daemon/initlayer`). Only that exact shape (regular, size 0, mode 0755) is the stub: an image
/// that ships a real file (non-empty, or any other mode) keeps it, and a symlink (e.g.
/// systemd-resolved's `resolv.conf`) is never touched. A stub is replaced by a proper 0644
/// root-owned default rather than dropped, because software expects these files to exist.
pub struct InitStub {
    pub path: &'static [u8],
    pub default: &'static [u8],
}

pub const INIT_LAYER_STUBS: &[InitStub] = &[
    InitStub {
        path: b"etc/hosts",
        default: HOSTS_DEFAULT,
    },
    InitStub {
        path: b"etc/hostname",
        default: HOSTNAME_DEFAULT,
    },
    InitStub {
        path: b"etc/resolv.conf",
        default: RESOLV_CONF_DEFAULT,
    },
];

fn is_init_stub_shape(m: &Member) -> bool {
    matches!(m.kind, Kind::File { size: 0 }) && m.meta.mode == 0o755
}

/// `/.dockerenv`: the marker by which software detects it runs under Docker. A template must not
/// claim that.
pub const DOCKERENV: &[u8] = b".dockerenv";

/// `/dev/console` as an empty regular file is the init layer's bind-mount target. LXC creates
/// `/dev` itself (autodev tmpfs) and bind-mounts the real console; Proxmox skips `./dev/*` anyway.
pub const DEV_CONSOLE: &[u8] = b"dev/console";

/// `/dev/pts` and `/dev/shm` are mount points (devpts, tmpfs) that LXC mounts itself. Their
/// contents in an export (`ptmx`, leftovers of the build's shared memory) are runtime state. The
/// directories themselves are kept: harmless, and useful to consumers that do not populate
/// `/dev` (Proxmox skips everything below `./dev/` regardless).
pub const RUNTIME_MOUNT_DIRS: &[&[u8]] = &[b"dev/pts", b"dev/shm"];

/// What to do with one member.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Keep,
    /// Leave it out; the reason goes into the report.
    Drop(&'static str),
    /// Write this content instead, as a 0644 root-owned regular file.
    Replace(&'static [u8]),
}

/// The rules, in order. `mount_points` are normalized paths the build itself mounted.
pub(crate) fn judge(m: &Member, mount_points: &[Vec<u8>]) -> Verdict {
    let p = m.path.as_slice();
    // Device nodes, anywhere: an unprivileged container cannot mknod, so GNU tar would fail on
    // any device outside the excluded `./dev/*`, and the ones in `dev/` come from the runtime,
    // not the image. LXC populates `/dev` at start.
    if matches!(m.kind, Kind::Char { .. } | Kind::Block { .. }) {
        return Verdict::Drop("device node");
    }
    if p == DOCKERENV {
        return Verdict::Drop("docker marker");
    }
    if let Some(stub) = INIT_LAYER_STUBS.iter().find(|s| s.path == p)
        && is_init_stub_shape(m)
    {
        return Verdict::Replace(stub.default);
    }
    if p == DEV_CONSOLE && matches!(m.kind, Kind::File { size: 0 }) {
        return Verdict::Drop("docker init-layer stub");
    }
    if RUNTIME_MOUNT_DIRS.iter().any(|d| is_strictly_below(p, d)) {
        return Verdict::Drop("runtime mount contents");
    }
    // Mount points the build itself added (bind mounts, volumes): the directory Docker created
    // for them, and anything below it, are not part of the template.
    if mount_points
        .iter()
        .any(|mp| p == mp.as_slice() || is_strictly_below(p, mp))
    {
        return Verdict::Drop("build mount point");
    }
    Verdict::Keep
}

/// The member that replaces an init-layer stub.
pub(crate) fn replacement(path: Vec<u8>, content: &'static [u8], epoch: u64) -> Member {
    Member {
        path,
        kind: Kind::File {
            size: content.len() as u64,
        },
        meta: Meta {
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: epoch,
        },
        pax: Vec::new(),
    }
}

/// Hard links whose target was dropped are dropped too (with the reason): a hard link can only
/// name a member that is in the archive, and re-creating the dropped content under another name
/// would bring the leftover back.
pub const LINK_TO_DROPPED: &str = "hard link to a dropped member";

fn is_strictly_below(p: &[u8], dir: &[u8]) -> bool {
    p.len() > dir.len() + 1 && p.starts_with(dir) && p[dir.len()] == b'/'
}

/// Lossy display of an archive name for reports and errors.
pub fn display(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(path: &str, kind: Kind, mode: u32) -> Member {
        Member {
            path: path.as_bytes().to_vec(),
            kind,
            meta: Meta {
                mode,
                uid: 0,
                gid: 0,
                mtime: 0,
            },
            pax: vec![],
        }
    }
    fn file(path: &str, size: u64, mode: u32) -> Member {
        member(path, Kind::File { size }, mode)
    }

    #[test]
    fn dockerenv_is_dropped_whatever_its_shape() {
        assert_eq!(
            judge(&file(".dockerenv", 0, 0o755), &[]),
            Verdict::Drop("docker marker")
        );
        assert_eq!(
            judge(&file(".dockerenv", 12, 0o644), &[]),
            Verdict::Drop("docker marker")
        );
        assert_eq!(judge(&file("srv/.dockerenv", 0, 0o755), &[]), Verdict::Keep);
    }

    #[test]
    fn init_stubs_are_replaced_only_in_their_exact_shape() {
        assert_eq!(
            judge(&file("etc/hosts", 0, 0o755), &[]),
            Verdict::Replace(HOSTS_DEFAULT)
        );
        assert_eq!(
            judge(&file("etc/hostname", 0, 0o755), &[]),
            Verdict::Replace(HOSTNAME_DEFAULT)
        );
        assert_eq!(
            judge(&file("etc/resolv.conf", 0, 0o755), &[]),
            Verdict::Replace(RESOLV_CONF_DEFAULT)
        );
        // real files shipped by the image
        assert_eq!(judge(&file("etc/hosts", 40, 0o755), &[]), Verdict::Keep);
        assert_eq!(judge(&file("etc/hosts", 0, 0o644), &[]), Verdict::Keep);
        let resolved = member(
            "etc/resolv.conf",
            Kind::Symlink {
                target: b"../run/systemd/resolve/stub-resolv.conf".to_vec(),
            },
            0o777,
        );
        assert_eq!(judge(&resolved, &[]), Verdict::Keep);
        // same name elsewhere
        assert_eq!(judge(&file("opt/etc/hosts", 0, 0o755), &[]), Verdict::Keep);
    }

    #[test]
    fn replacement_is_root_owned_0644_with_content() {
        let r = replacement(b"etc/hostname".to_vec(), HOSTNAME_DEFAULT, 42);
        assert_eq!(
            r.kind,
            Kind::File {
                size: HOSTNAME_DEFAULT.len() as u64
            }
        );
        assert_eq!(
            r.meta,
            Meta {
                mode: 0o644,
                uid: 0,
                gid: 0,
                mtime: 42
            }
        );
        assert!(HOSTS_DEFAULT.starts_with(b"127.0.0.1\tlocalhost\n"));
    }

    #[test]
    fn devices_are_dropped_everywhere() {
        let null = member("dev/null", Kind::Char { major: 1, minor: 3 }, 0o666);
        assert_eq!(judge(&null, &[]), Verdict::Drop("device node"));
        let loop0 = member(
            "lib/udev/devices/loop0",
            Kind::Block { major: 7, minor: 0 },
            0o660,
        );
        assert_eq!(judge(&loop0, &[]), Verdict::Drop("device node"));
    }

    #[test]
    fn dev_console_stub_and_runtime_mount_contents() {
        assert_eq!(
            judge(&file("dev/console", 0, 0o755), &[]),
            Verdict::Drop("docker init-layer stub")
        );
        let pts = member("dev/pts", Kind::Dir, 0o755);
        assert_eq!(judge(&pts, &[]), Verdict::Keep);
        assert_eq!(
            judge(&file("dev/shm/x", 3, 0o644), &[]),
            Verdict::Drop("runtime mount contents")
        );
        let ptmx = member(
            "dev/pts/ptmx",
            Kind::Symlink {
                target: b"x".to_vec(),
            },
            0o777,
        );
        assert_eq!(judge(&ptmx, &[]), Verdict::Drop("runtime mount contents"));
        // `dev/` itself and other image content below it stay (Proxmox skips them anyway)
        assert_eq!(judge(&member("dev", Kind::Dir, 0o755), &[]), Verdict::Keep);
        assert_eq!(judge(&file("dev/shmx", 1, 0o644), &[]), Verdict::Keep);
        assert_eq!(judge(&member("proc", Kind::Dir, 0o555), &[]), Verdict::Keep);
        assert_eq!(judge(&member("sys", Kind::Dir, 0o555), &[]), Verdict::Keep);
    }

    #[test]
    fn mount_points_drop_their_subtree_only() {
        let mps = vec![b"build".to_vec()];
        assert_eq!(
            judge(&member("build", Kind::Dir, 0o755), &mps),
            Verdict::Drop("build mount point")
        );
        assert_eq!(
            judge(&file("build/x", 1, 0o644), &mps),
            Verdict::Drop("build mount point")
        );
        assert_eq!(judge(&file("buildx", 1, 0o644), &mps), Verdict::Keep);
    }

    #[test]
    fn pax_selection() {
        assert!(pax_key_wanted(b"SCHILY.xattr.security.capability"));
        assert!(pax_key_wanted(b"SCHILY.xattr.user.mime_type"));
        assert!(pax_key_wanted(b"SCHILY.acl.access"));
        assert!(pax_key_wanted(b"SCHILY.acl.default"));
        assert!(!pax_key_wanted(b"SCHILY.xattr.trusted.overlay.opaque"));
        assert!(!pax_key_wanted(b"SCHILY.xattr.security.selinux"));
        assert!(!pax_key_wanted(b"SCHILY.xattr.user"));
        assert!(!pax_key_wanted(b"mtime"));
        assert!(!pax_key_wanted(b"uname"));
        assert!(!pax_key_wanted(b"path"));
    }

    #[test]
    fn ids_and_modes() {
        assert_eq!(clamp_mtime(5, 10), 5);
        assert_eq!(clamp_mtime(15, 10), 10);
        assert_eq!(0o104755 & MODE_MASK, 0o4755);
        assert_eq!(0o41777 & MODE_MASK, 0o1777);
        let mut m = file("x", 0, 0o644);
        assert_eq!(id_warning(&m), None);
        m.meta.uid = 65535;
        assert_eq!(id_warning(&m), None);
        m.meta.gid = 100000;
        assert!(id_warning(&m).unwrap().contains("./x"));
        assert_eq!(
            root_meta(7),
            Meta {
                mode: 0o755,
                uid: 0,
                gid: 0,
                mtime: 7
            }
        );
    }
}
