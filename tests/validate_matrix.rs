//! The Ubuntu / Debian × Proxmox VE matrix, derived from `shared/reference/proxmox-api.md` §8.3
//! (known Ubuntu versions per pve-container release, the Debian upper bounds, warn-only since
//! 6.0.12) and the PVE → pve-container table in `validate::pve::PVE_CONTAINER`.

mod validate_common;
use lxcforge::validate::Status::{self, Fail, Pass, Warn};
use validate_common::*;

fn check(r: &Rootfs, pve: &str, want: Status, label: &str) {
    let rep = run("t.tar.zst", &zstd(&r.tar()), Some(pve));
    let got = rep.status_of("pve.version");
    assert_eq!(
        got,
        Some(want),
        "{label} on PVE {pve}: expected {want:?}\n{}",
        rep.render_table()
    );
    assert_eq!(rep.passed(), want != Fail, "{label} on PVE {pve}");
}

#[test]
fn ubuntu_matrix() {
    // (release, [PVE 7.4, 8.2, 9.2])
    let table: &[(&str, [Status; 3])] = &[
        ("22.04", [Pass, Pass, Pass]), // known since 4.1-3
        ("24.04", [Fail, Pass, Pass]), // known since 5.1.10; unknown is fatal before 6.0.12
        ("25.10", [Fail, Fail, Pass]), // known since 6.0.12
    ];
    for (rel, row) in table {
        for (pve, want) in ["7.4", "8.2", "9.2"].iter().zip(row) {
            check(&Rootfs::ubuntu(rel), pve, *want, &format!("Ubuntu {rel}"));
        }
    }
}

#[test]
fn ubuntu_edges() {
    // 25.10 on 9.0 (6.0.9: unknown is still fatal) and 9.1 (6.0.12: known)
    check(&Rootfs::ubuntu("25.10"), "9.0", Fail, "Ubuntu 25.10");
    check(&Rootfs::ubuntu("25.10"), "9.1", Pass, "Ubuntu 25.10");
    // unknown and newer than the table: warning only since 6.0.12
    check(&Rootfs::ubuntu("27.04"), "9.2", Warn, "Ubuntu 27.04");
    check(&Rootfs::ubuntu("27.04"), "8.4", Fail, "Ubuntu 27.04");
    // unknown and ancient (< 17): fatal everywhere
    check(&Rootfs::ubuntu("16.12"), "9.2", Fail, "Ubuntu 16.12");
    // 24.10 arrived in 5.2.2 (PVE 8.3)
    check(&Rootfs::ubuntu("24.10"), "8.2", Fail, "Ubuntu 24.10");
    check(&Rootfs::ubuntu("24.10"), "8.3", Pass, "Ubuntu 24.10");
}

#[test]
fn ubuntu_lsb_release_is_what_counts() {
    // os-release says 24.04, lsb-release is quoted: the regex wants an unquoted N.N
    let mut r = Rootfs::ubuntu("24.04");
    r.file(
        "./etc/lsb-release",
        b"DISTRIB_ID=Ubuntu\nDISTRIB_RELEASE=\"24.04\"\n",
    );
    check(&r, "9.2", Fail, "quoted DISTRIB_RELEASE");
    let mut r = Rootfs::ubuntu("24.04");
    r.remove("./etc/lsb-release");
    check(&r, "9.2", Fail, "missing lsb-release");
    // case-insensitive match of DISTRIB_ID (Perl /mi)
    let mut r = Rootfs::ubuntu("24.04");
    r.file(
        "./etc/lsb-release",
        b"distrib_id=ubuntu\nDISTRIB_RELEASE=24.04\n",
    );
    check(&r, "9.2", Pass, "lower-case lsb-release");
}

#[test]
fn debian_matrix() {
    // (debian_version content, [PVE 7.4, 8.2, 8.4, 9.0, 9.1, 9.2])
    let pves = ["7.4", "8.2", "8.4", "9.0", "9.1", "9.2"];
    let table: &[(&str, [Status; 6])] = &[
        // ≤ 4.x allows <= 12 compared as X.Y, so 12.7 fails on PVE 7
        ("12.7", [Fail, Pass, Pass, Pass, Pass, Pass]),
        ("bookworm/sid", [Pass, Pass, Pass, Pass, Pass, Pass]),
        // 5.0.2–6.0.9 allow <= 13: 13.1 fails (PVE 8.4.12, 9.0.x reports)
        ("13.1", [Fail, Fail, Fail, Fail, Pass, Pass]),
        ("13", [Fail, Pass, Pass, Pass, Pass, Pass]),
        ("trixie/sid", [Fail, Pass, Pass, Pass, Pass, Pass]),
        // above the maximum: fatal before 6.0.10, warning since 6.0.12
        ("15.0", [Fail, Fail, Fail, Fail, Warn, Warn]),
        ("3.1", [Fail, Fail, Fail, Fail, Fail, Fail]),
        ("not-a-version", [Fail, Fail, Fail, Fail, Fail, Fail]),
    ];
    for (dv, row) in table {
        for (pve, want) in pves.iter().zip(row) {
            check(&Rootfs::debian(dv), pve, *want, &format!("Debian '{dv}'"));
        }
    }
}

#[test]
fn default_target_is_the_newest_and_unknown_targets_are_refused() {
    let rep = run("t.tar.zst", &zstd(&Rootfs::debian("13.1").tar()), None);
    assert_eq!(rep.pve_version, "9.2");
    assert_eq!(rep.pve_container, "6.1.10");
    let err = lxcforge::validate::validate_reader(
        "t.tar",
        std::io::Cursor::new(Rootfs::debian("12").tar()),
        &opts(Some("6.4")),
    )
    .unwrap_err();
    assert!(err.to_string().contains("6.4"), "{err}");
    // newer than the table: the newest entry's rules
    let rep = run("t.tar", &Rootfs::debian("12").tar(), Some("10.0"));
    assert_eq!(rep.pve_container, "6.1.10");
    assert!("8.x".parse::<lxcforge::validate::PveVersion>().is_err());
    assert_eq!(
        "8.4.12"
            .parse::<lxcforge::validate::PveVersion>()
            .unwrap()
            .to_string(),
        "8.4"
    );
}
