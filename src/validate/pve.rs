//! What pve-container does with a template (`shared/reference/proxmox-api.md` §8.3): distro
//! detection, the Ubuntu / Debian version checks of each pve-container release, `/sbin/init`,
//! and the ELF architecture of `/bin/sh`.

use super::tree::{Lookup, NodeKind, Tree};
use super::{Checks, ValidateError};
use std::fmt;
use std::str::FromStr;

/// A Proxmox VE release, `major.minor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PveVersion {
    pub major: u32,
    pub minor: u32,
}

impl FromStr for PveVersion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("invalid Proxmox VE version '{s}': expected MAJOR.MINOR, e.g. 8.2");
        let (a, b) = s.trim().split_once('.').ok_or_else(bad)?;
        // Accept a point release (8.4.12) by ignoring the patch level.
        let b = b.split('.').next().unwrap_or(b);
        Ok(PveVersion {
            major: a.parse().map_err(|_| bad())?,
            minor: b.parse().map_err(|_| bad())?,
        })
    }
}

impl fmt::Display for PveVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// A pve-container package version (`4.4-6` is written `4.4.6`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContainerVersion(pub u32, pub u32, pub u32);

impl fmt::Display for ContainerVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

const fn pve(major: u32, minor: u32) -> PveVersion {
    PveVersion { major, minor }
}
const fn cv(a: u32, b: u32, c: u32) -> ContainerVersion {
    ContainerVersion(a, b, c)
}

/// THE table: Proxmox VE release → the pve-container version assumed for it.
///
/// Sources: `shared/reference/proxmox-api.md` §0.2 and §8.3 (pve-container `debian/changelog`
/// versions of each rule change, read at pve-container 6.1.10 / pve-manager 9.2.11), and the
/// issue reports cited there (13.1 refused on PVE 8.4.12 and 9.0.x; 12.2 refused on PVE 7.3;
/// Ubuntu 24.04 refused before 5.1.10). The reference says PVE 7 = 4.x, 8 = 5.x, 9 = 6.x, but
/// does not say which point release shipped which package, so the minor → patch mapping below is
/// **inference** except where marked "source". Only the thresholds matter: 4.1.3, 4.2.3, 5.0.2,
/// 5.1.10, 5.2.2, 6.0.10, 6.0.12, 6.1.7; every entry sits clearly on one side of each.
pub const PVE_CONTAINER: &[(PveVersion, ContainerVersion)] = &[
    (pve(7, 0), cv(4, 0, 0)),  // inference: 7.0 = first 4.x
    (pve(7, 1), cv(4, 1, 0)),  // inference: before 22.04 (4.1-3)
    (pve(7, 2), cv(4, 2, 0)),  // inference: 22.04 known, 22.10 not yet (4.2-3)
    (pve(7, 3), cv(4, 4, 0)),  // inference; Debian ≤ 12 rule (source: 12.2 fails on 7.3)
    (pve(7, 4), cv(4, 4, 0)),  // inference: last 4.x line (4.4-x)
    (pve(8, 0), cv(5, 0, 4)),  // inference: 5.0.x ≥ 5.0.2 (Debian ≤ 13, Ubuntu 23.10)
    (pve(8, 1), cv(5, 0, 8)),  // inference: 5.0.x, before 24.04 (5.1.10)
    (pve(8, 2), cv(5, 1, 10)), // inference: 24.04 support shipped with 8.2 (5.1.10)
    (pve(8, 3), cv(5, 2, 2)),  // inference: 5.2.x with 24.10 / 25.04
    (pve(8, 4), cv(5, 2, 6)),  // source: 5.0.2…5.2.6 refuse 13.1, seen on PVE 8.4.12
    (pve(9, 0), cv(6, 0, 9)),  // source: 6.0.0–6.0.9 refuse 13.1, seen on PVE 9.0.x
    (pve(9, 1), cv(6, 0, 12)), // inference: 6.0.12+ (25.10 / 26.04, unknown versions warn)
    (pve(9, 2), cv(6, 1, 10)), // source: pve-manager 9.2.11 with pve-container 6.1.10 (HEAD)
];

/// The pve-container version for a target (None = newest). Releases newer than the table use
/// its last entry; older ones are an error.
pub fn resolve_target(
    v: Option<PveVersion>,
) -> Result<(PveVersion, ContainerVersion), ValidateError> {
    let last = *PVE_CONTAINER.last().expect("table is not empty");
    let Some(v) = v else { return Ok(last) };
    if let Some(e) = PVE_CONTAINER.iter().find(|(p, _)| *p == v) {
        return Ok(*e);
    }
    if v > last.0 {
        return Ok((v, last.1));
    }
    Err(ValidateError::UnknownPveVersion {
        version: v.to_string(),
        known: PVE_CONTAINER
            .iter()
            .map(|(p, _)| p.to_string())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// Ubuntu versions pve-container knows, with the release that added them (§8.3).
const UBUNTU_KNOWN: &[(&str, ContainerVersion)] = &[
    ("12.04", cv(0, 0, 0)),
    ("14.04", cv(0, 0, 0)),
    ("15.04", cv(0, 0, 0)),
    ("15.10", cv(0, 0, 0)),
    ("16.04", cv(0, 0, 0)),
    ("16.10", cv(0, 0, 0)),
    ("17.04", cv(0, 0, 0)),
    ("17.10", cv(0, 0, 0)),
    ("18.04", cv(0, 0, 0)),
    ("18.10", cv(0, 0, 0)),
    ("19.04", cv(0, 0, 0)),
    ("19.10", cv(0, 0, 0)),
    ("20.04", cv(0, 0, 0)),
    ("20.10", cv(0, 0, 0)),
    ("21.04", cv(0, 0, 0)),
    ("21.10", cv(0, 0, 0)),
    ("22.04", cv(4, 1, 3)),
    ("22.10", cv(4, 2, 3)),
    ("23.04", cv(4, 2, 3)),
    ("23.10", cv(5, 0, 2)),
    ("24.04", cv(5, 1, 10)),
    ("24.10", cv(5, 2, 2)),
    ("25.04", cv(5, 2, 2)),
    ("25.10", cv(6, 0, 12)),
    ("26.04", cv(6, 0, 12)),
    ("26.10", cv(6, 1, 7)),
];

const UBUNTU_WARN_FROM: ContainerVersion = cv(6, 0, 12);
const DEBIAN_LE_13_FROM: ContainerVersion = cv(5, 0, 2);
const DEBIAN_LT_15_FROM: ContainerVersion = cv(6, 0, 10);
const DEBIAN_WARN_FROM: ContainerVersion = cv(6, 0, 12);

/// Result of a version rule: `Ok(None)` pass, `Ok(Some(w))` warning, `Err(e)` refused.
pub type Verdict = Result<Option<String>, String>;

/// pve-container `Setup/Ubuntu.pm` `new` on the content of `/etc/lsb-release`.
pub fn ubuntu_verdict(lsb: Option<&[u8]>, c: ContainerVersion) -> Verdict {
    let Some(lsb) = lsb else {
        return Err("can't open '/etc/lsb-release' - No such file or directory".into());
    };
    let text = String::from_utf8_lossy(lsb);
    // Perl m/^...$/mi: per line ($ also before the final \n), case-insensitive.
    let lines: Vec<&str> = text.split('\n').collect();
    if !lines
        .iter()
        .any(|l| l.eq_ignore_ascii_case("DISTRIB_ID=Ubuntu"))
    {
        return Err("got unknown DISTRIB_ID".into());
    }
    let version = lines.iter().find_map(|l| {
        let (k, v) = l.split_at_checked(16)?;
        if !k.eq_ignore_ascii_case("DISTRIB_RELEASE=") {
            return None;
        }
        let (a, b) = v.split_once('.')?;
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        (digits(a) && digits(b)).then(|| v.to_string())
    });
    let Some(v) = version else {
        return Err("unable to read version info".into());
    };
    if UBUNTU_KNOWN.iter().any(|(k, added)| *k == v && *added <= c) {
        return Ok(None);
    }
    if c < UBUNTU_WARN_FROM {
        return Err(format!("unsupported Ubuntu version '{v}'"));
    }
    let major: u32 = v.split('.').next().unwrap_or("0").parse().unwrap_or(0);
    if major < 17 {
        return Err(format!("unsupported ancient Ubuntu version '{v}'"));
    }
    Ok(Some(format!(
        "The container's Ubuntu version '{v}' is not in the known version list. As it's newer than the minimum supported version it's likely to work OK, but full compatibility cannot be guaranteed. Please check for PVE system updates."
    )))
}

/// pve-container `Setup/Debian.pm` `new` on the content of `/etc/debian_version`.
pub fn debian_verdict(dv: Option<&[u8]>, c: ContainerVersion) -> Verdict {
    let Some(dv) = dv else {
        return Err("unable to read version info".into());
    };
    let text = String::from_utf8_lossy(dv);
    let first = text.split('\n').next().unwrap_or("");
    let first = first.strip_suffix('\r').unwrap_or(first);
    const MAP: &[(&str, &str)] = &[
        ("stretch/sid", "9.1"),
        ("buster/sid", "10"),
        ("bullseye/sid", "11"),
        ("bookworm/sid", "12"),
        ("trixie/sid", "13"),
        ("forky/sid", "14"),
        ("duke/sid", "15"),
        ("kali-rolling", "12"),
    ];
    let mapped = MAP
        .iter()
        .find(|(k, _)| *k == first)
        .map(|(_, v)| *v)
        .unwrap_or(first);
    // ^(\d+(\.\d+)?)(\.\d+)?  → $1
    let b = mapped.as_bytes();
    let int_end = b.iter().take_while(|c| c.is_ascii_digit()).count();
    if int_end == 0 {
        return Err(format!("unable to parse version info '{mapped}'"));
    }
    let mut end = int_end;
    if b.get(int_end) == Some(&b'.') {
        let frac = b[int_end + 1..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        if frac > 0 {
            end = int_end + 1 + frac;
        }
    }
    let v1 = &mapped[..end];
    let num: f64 = v1.parse().unwrap_or(0.0);
    if c >= DEBIAN_WARN_FROM {
        let i = num.trunc();
        if i < 4.0 {
            return Err(format!("Container Debian version '{i}' is too old"));
        }
        if i >= 15.0 {
            return Ok(Some(format!(
                "Debian version '{i}' is newer than the versions this Proxmox release knows; it will only warn"
            )));
        }
        return Ok(None);
    }
    let ok = if c >= DEBIAN_LT_15_FROM {
        (4.0..15.0).contains(&num)
    } else if c >= DEBIAN_LE_13_FROM {
        (4.0..=13.0).contains(&num)
    } else {
        (4.0..=12.0).contains(&num)
    };
    if ok {
        Ok(None)
    } else {
        Err(format!("unsupported debian version '{v1}'"))
    }
}

/// `KEY=value` pairs of an os-release file, quotes removed.
fn os_release_id(content: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(content);
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("ID=") {
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            return Some(v.to_string());
        }
    }
    None
}

const PLUGINS: &[&str] = &[
    "alpine",
    "archlinux",
    "centos",
    "debian",
    "devuan",
    "fedora",
    "gentoo",
    "openeuler",
    "opensuse",
    "ubuntu",
    "nixos",
    "unmanaged",
];

fn alias(id: &str) -> Option<&'static str> {
    if let Some(p) = PLUGINS.iter().find(|p| **p == id) {
        return Some(p);
    }
    Some(match id {
        "opensuse-leap" | "opensuse-tumbleweed" | "opensuse-slowroll" | "sles" => "opensuse",
        "openEuler" => "openeuler",
        "arch" => "archlinux",
        "rocky" | "almalinux" => "centos",
        _ => return None,
    })
}

fn content<'a>(tree: &'a Tree, p: &[u8]) -> Option<&'a [u8]> {
    match tree.read(p) {
        Lookup::Content(c) => Some(c),
        _ => None,
    }
}

fn exists(tree: &Tree, p: &[u8]) -> bool {
    tree.resolve(p).is_some_and(|r| tree.node(&r).is_some())
}

/// Distro detection (`Setup.pm` `new`). `Err` = pve-container dies.
fn detect(tree: &Tree, checks: &mut Checks) -> Result<&'static str, String> {
    let os = content(tree, b"etc/os-release").or_else(|| content(tree, b"usr/lib/os-release"));
    let have_os = os.is_some();
    if let Some(os) = os {
        match os_release_id(os) {
            Some(id) => match alias(&id) {
                Some(p) => return Ok(p),
                None => checks.warn(
                    "pve.distro",
                    format!("unknown ID '{id}' in /etc/os-release file, trying fallback detection"),
                    Some("etc/os-release".into()),
                ),
            },
            None => checks.warn(
                "pve.distro",
                "no ID= in /etc/os-release, trying fallback detection".into(),
                Some("etc/os-release".into()),
            ),
        }
    }
    if let Some(lsb) = content(tree, b"etc/lsb-release")
        && String::from_utf8_lossy(lsb)
            .split('\n')
            .any(|l| l.eq_ignore_ascii_case("DISTRIB_ID=Ubuntu"))
    {
        return Ok("ubuntu");
    }
    const FALLBACK: &[(&[u8], &str)] = &[
        (b"etc/debian_version", "debian"),
        (b"etc/devuan_version", "devuan"),
        (b"etc/SuSE-brand", "opensuse"),
        (b"etc/SuSE-release", "opensuse"),
        (b"etc/fedora-release", "fedora"),
        (b"etc/centos-release", "centos"),
        (b"etc/redhat-release", "centos"),
        (b"etc/arch-release", "archlinux"),
        (b"etc/alpine-release", "alpine"),
        (b"etc/gentoo-release", "gentoo"),
        (b"nix/store", "nixos"),
        (b"etc/openEuler-release", "openeuler"),
    ];
    for (p, d) in FALLBACK {
        if exists(tree, p) {
            return Ok(d);
        }
    }
    if have_os {
        Err("unable to detect OS distribution".into())
    } else {
        checks.warn(
            "pve.distro",
            "/etc/os-release file not found and autodetection failed, falling back to 'unmanaged'"
                .into(),
            Some("etc/os-release".into()),
        );
        Ok("unmanaged")
    }
}

pub(crate) fn checks(tree: &Tree, c: ContainerVersion, checks: &mut Checks) {
    // Distro and version.
    match detect(tree, checks) {
        Err(e) => {
            checks.fail("pve.distro", e, Some("etc/os-release".into()));
            checks.fail("pve.version", "distribution not detected".into(), None);
        }
        Ok(d) => {
            checks.pass("pve.distro", format!("detected {d}"));
            let (verdict, member) = match d {
                "ubuntu" => (
                    ubuntu_verdict(content(tree, b"etc/lsb-release"), c),
                    "etc/lsb-release",
                ),
                "debian" => (
                    debian_verdict(content(tree, b"etc/debian_version"), c),
                    "etc/debian_version",
                ),
                other => {
                    checks.pass(
                        "pve.version",
                        format!("no version rule checked for {other}"),
                    );
                    (Ok(None), "")
                }
            };
            if !member.is_empty() {
                match verdict {
                    Ok(None) => checks.pass(
                        "pve.version",
                        format!("{d} version accepted by pve-container {c}"),
                    ),
                    Ok(Some(w)) => checks.warn("pve.version", w, Some(member.into())),
                    Err(e) => checks.fail(
                        "pve.version",
                        format!("pve-container {c} refuses the template: {e}"),
                        Some(member.into()),
                    ),
                }
            }
        }
    }

    // /sbin/init → systemd.
    match tree.resolve(b"sbin/init") {
        None => checks.warn("pve.init", "/sbin/init is a symlink loop".into(), Some("sbin/init".into())),
        Some(r) => match tree.node(&r) {
            Some(n) if matches!(n.kind, NodeKind::File { .. })
                && super::tree::base_name(&r) == b"systemd" =>
            {
                checks.pass("pve.init", format!("/sbin/init is systemd (/{})", String::from_utf8_lossy(&r)))
            }
            Some(_) => checks.warn(
                "pve.init",
                format!(
                    "/sbin/init resolves to /{}, not systemd: Proxmox's getty and preset handling assume systemd",
                    String::from_utf8_lossy(&r)
                ),
                Some("sbin/init".into()),
            ),
            None => checks.warn(
                "pve.init",
                "no /sbin/init (or it points to a missing file): the container will not boot an init".into(),
                Some("sbin/init".into()),
            ),
        },
    }

    // ELF architecture of /bin/sh.
    let sh = tree.resolve(b"bin/sh");
    let node = sh.as_ref().and_then(|r| tree.node(r).map(|n| (r, n)));
    match node {
        None => checks.fail(
            "pve.arch",
            "/bin/sh is missing: Proxmox cannot detect the architecture and falls back to amd64"
                .into(),
            Some("bin/sh".into()),
        ),
        Some((r, n)) => {
            let head = tree.heads.get(r);
            match (matches!(n.kind, NodeKind::File { .. }), head.and_then(|h| elf_arch(h))) {
                (true, Some(arch)) => checks.pass("pve.arch", format!("/bin/sh (/{}) is {arch}", String::from_utf8_lossy(r))),
                _ => checks.fail(
                    "pve.arch",
                    format!(
                        "/bin/sh (/{}) is not an ELF binary Proxmox recognises: architecture detection fails (falls back to amd64)",
                        String::from_utf8_lossy(r)
                    ),
                    Some("bin/sh".into()),
                ),
            }
        }
    }
}

/// `LXC/Tools.pm` `detect_elf_architecture`.
pub fn elf_arch(h: &[u8]) -> Option<&'static str> {
    if h.len() < 20 || &h[..4] != b"\x7fELF" {
        return None;
    }
    let machine = match h[5] {
        1 => u16::from_le_bytes([h[18], h[19]]),
        2 => u16::from_be_bytes([h[18], h[19]]),
        _ => return None,
    };
    let class64 = h[4] == 2;
    Some(match machine {
        0x03 => "i386",
        0x3e => "amd64",
        0x28 => "armhf",
        0xb7 => "arm64",
        0xf3 if class64 => "riscv64",
        0xf3 => "riscv32",
        _ => return None,
    })
}
