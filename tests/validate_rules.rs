//! One test per validator rule: a clean synthetic Debian rootfs passes, each mutation gives the
//! expected check id, status and member.

mod validate_common;
use lxcforge::validate::Status::{Fail, Pass, Warn};
use validate_common::*;

fn deb() -> Rootfs {
    Rootfs::debian("12.7")
}

#[test]
fn clean_debian_passes_in_every_compression() {
    let r = deb();
    let tar = r.tar();
    for (name, bytes) in [
        ("t.tar", tar.clone()),
        ("t.tar.gz", gzip(&tar)),
        ("t.tar.zst", zstd(&tar)),
        ("t.tar.xz", xz(&tar)),
    ] {
        let rep = run(name, &bytes, None);
        expect_clean(&rep);
        assert_eq!(
            rep.counts().1,
            0,
            "no warnings expected:\n{}",
            rep.render_table()
        );
        expect(&rep, "pve.distro", Pass, None);
        expect(&rep, "pve.version", Pass, None);
        expect(&rep, "pve.arch", Pass, None);
        assert!(rep.render_table().contains("amd64"));
        assert_eq!(rep.exit_code(), 0);
    }
}

#[test]
fn gzip_multi_member_is_read_whole() {
    let tar = deb().tar();
    let (a, b) = tar.split_at(4096);
    let mut gz = gzip(a);
    gz.extend(gzip(b));
    expect_clean(&run("t.tar.gz", &gz, None));
}

#[test]
fn compression_must_match_extension() {
    let rep = run("t.tar.zst", &deb().tar_gz(), None);
    expect(&rep, "archive.compression", Fail, None);
    let rep = run("t.tar", &deb().tar_gz(), None);
    expect(&rep, "archive.compression", Fail, None);
}

#[test]
fn extension_must_be_a_template_one() {
    expect(
        &run("t.tgz", &deb().tar_gz(), None),
        "archive.extension",
        Fail,
        None,
    );
    expect(
        &run("t.tar.lz4", &deb().tar_gz(), None),
        "archive.extension",
        Fail,
        None,
    );
}

#[test]
fn truncated_stream_fails() {
    let gz = deb().tar_gz();
    let rep = run("t.tar.gz", &gz[..gz.len() / 2], None);
    expect(&rep, "archive.complete", Fail, None);
    let tar = deb().tar();
    // cut inside member data
    let rep = run("t.tar", &tar[..2000], None);
    expect(&rep, "archive.complete", Fail, None);
}

#[test]
fn missing_end_marker_fails() {
    let mut out = Vec::new();
    for e in &deb().entries {
        write_entry(&mut out, e);
    }
    expect(&run("t.tar", &out, None), "archive.complete", Fail, None);
}

#[test]
fn trailing_garbage_fails() {
    let mut tar = deb().tar();
    tar.extend_from_slice(b"garbage after the archive");
    expect(&run("t.tar", &tar, None), "archive.trailing", Fail, None);
    let mut gz = deb().tar_gz();
    gz.extend_from_slice(b"garbage after the gzip stream");
    expect(&run("t.tar.gz", &gz, None), "archive.trailing", Fail, None);
    // zero padding is fine
    let mut tar = deb().tar();
    tar.extend_from_slice(&[0u8; 4096]);
    expect_clean(&run("t.tar", &tar, None));
}

#[test]
fn wrapper_directory_fails() {
    let mut r = deb();
    r.map_names(|n| format!("rootfs/{}", n.trim_start_matches("./")));
    expect(&run_gz(&r), "archive.root", Fail, Some("rootfs"));
}

#[test]
fn absolute_names_fail() {
    let mut r = deb();
    r.file("/etc/evil", b"x");
    expect(&run_gz(&r), "archive.names", Fail, Some("/etc/evil"));
}

#[test]
fn dotdot_names_fail() {
    let mut r = deb();
    r.file("./etc/../../evil", b"x");
    expect(&run_gz(&r), "archive.names", Fail, Some("./etc/../../evil"));
}

#[test]
fn mixed_naming_fails_and_plain_naming_passes() {
    let mut r = deb();
    r.file("etc/plain", b"x");
    expect(&run_gz(&r), "archive.naming", Fail, Some("etc/plain"));
    let mut r = deb();
    r.remove("./");
    r.map_names(|n| n.trim_start_matches("./").to_string());
    let rep = run_gz(&r);
    expect_clean(&rep);
    expect(&rep, "archive.naming", Pass, None);
}

#[test]
fn ids_above_65535_fail() {
    let mut r = deb();
    r.file("./etc/owned", b"x");
    r.entries.last_mut().unwrap().uid = 100_000;
    expect(&run_gz(&r), "archive.ids", Fail, Some("./etc/owned"));
    let mut r = deb();
    r.file("./etc/owned", b"x");
    r.entries.last_mut().unwrap().gid = 1 << 40; // base-256
    expect(&run_gz(&r), "archive.ids", Fail, Some("./etc/owned"));
}

#[test]
fn device_nodes_fail_anywhere() {
    let mut r = deb();
    r.device("./dev/null");
    expect(&run_gz(&r), "archive.devices", Fail, Some("./dev/null"));
    let mut r = deb();
    r.device("./root/sda");
    expect(&run_gz(&r), "archive.devices", Fail, Some("./root/sda"));
}

#[test]
fn duplicate_members_fail() {
    let mut r = deb();
    r.push(r.entries[5].clone());
    let name = String::from_utf8(r.entries[5].name.clone()).unwrap();
    expect(&run_gz(&r), "archive.duplicates", Fail, Some(&name));
}

#[test]
fn hard_link_before_its_target_fails() {
    let mut r = deb();
    r.hardlink("./usr/bin/ash", "./usr/bin/dash");
    expect_clean(&run_gz(&r));
    let mut r = deb();
    r.hardlink("./usr/bin/early", "./usr/bin/later");
    r.file("./usr/bin/later", b"x");
    expect(
        &run_gz(&r),
        "archive.hardlinks",
        Fail,
        Some("./usr/bin/early"),
    );
}

#[test]
fn symlink_climbing_above_root_warns() {
    let mut r = deb();
    r.symlink("./etc/out", "../../../outside");
    let rep = run_gz(&r);
    expect(&rep, "archive.symlinks", Warn, Some("./etc/out"));
    expect_clean(&rep);
}

#[test]
fn docker_leftovers_fail() {
    let mut r = deb();
    r.file_mode("./.dockerenv", b"", 0o755);
    expect(&run_gz(&r), "hygiene.leftovers", Fail, Some("./.dockerenv"));
    let mut r = deb();
    r.file_mode("./etc/hosts", b"", 0o755);
    expect(&run_gz(&r), "hygiene.leftovers", Fail, Some("./etc/hosts"));
    let mut r = deb();
    r.dir("./dev/shm/");
    r.file("./dev/shm/sem.build", b"x");
    expect(
        &run_gz(&r),
        "hygiene.leftovers",
        Fail,
        Some("./dev/shm/sem.build"),
    );
}

#[test]
fn machine_id_must_be_empty() {
    let mut r = deb();
    r.file("./etc/machine-id", b"0123456789abcdef0123456789abcdef\n");
    expect(
        &run_gz(&r),
        "hygiene.machine-id",
        Fail,
        Some("etc/machine-id"),
    );
    let mut r = deb();
    r.remove("./etc/machine-id");
    let rep = run_gz(&r);
    expect(&rep, "hygiene.machine-id", Warn, Some("etc/machine-id"));
}

#[test]
fn dbus_machine_id_must_not_be_baked() {
    let mut r = deb();
    r.file(
        "./var/lib/dbus/machine-id",
        b"0123456789abcdef0123456789abcdef\n",
    );
    expect(
        &run_gz(&r),
        "hygiene.dbus-machine-id",
        Fail,
        Some("var/lib/dbus/machine-id"),
    );
    let mut r = deb();
    r.remove("./var/lib/dbus/machine-id");
    expect(&run_gz(&r), "hygiene.dbus-machine-id", Pass, None);
}

#[test]
fn ssh_host_keys_fail() {
    let mut r = deb();
    r.file_mode(
        "./etc/ssh/ssh_host_ed25519_key",
        b"-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n",
        0o600,
    );
    r.file(
        "./etc/ssh/ssh_host_ed25519_key.pub",
        b"ssh-ed25519 AAAA root@build\n",
    );
    let rep = run_gz(&r);
    expect(
        &rep,
        "secrets.ssh-host-keys",
        Fail,
        Some("etc/ssh/ssh_host_ed25519_key"),
    );
    assert_eq!(
        rep.find("secrets.ssh-host-keys").count(),
        1,
        "{}",
        rep.render_table()
    );
}

#[test]
fn authorized_keys_with_content_fail() {
    let mut r = deb();
    r.dir("./root/.ssh/");
    r.file(
        "./root/.ssh/authorized_keys",
        b"ssh-ed25519 AAAA me@laptop\n",
    );
    expect(
        &run_gz(&r),
        "secrets.authorized-keys",
        Fail,
        Some("root/.ssh/authorized_keys"),
    );
    let mut r = deb();
    r.dir("./root/.ssh/");
    r.file("./root/.ssh/authorized_keys", b"");
    expect_clean(&run_gz(&r));
}

#[test]
fn unlocked_passwords_fail_naming_the_user() {
    let mut r = deb();
    r.file(
        "./etc/shadow",
        b"root:$6$salt$hash:19000:0:99999:7:::\ndaemon:*:19000::::::\nguest::19000::::::\n",
    );
    let rep = run_gz(&r);
    let msgs: Vec<&str> = rep
        .find("secrets.shadow")
        .map(|c| c.message.as_str())
        .collect();
    assert!(msgs.iter().any(|m| m.contains("'root'")), "{msgs:?}");
    assert!(msgs.iter().any(|m| m.contains("'guest'")), "{msgs:?}");
    assert!(!msgs.iter().any(|m| m.contains("'daemon'")), "{msgs:?}");
    expect(&rep, "secrets.shadow", Fail, Some("etc/shadow"));
}

#[test]
fn shell_history_fails() {
    let mut r = deb();
    r.file("./root/.bash_history", b"apt-get install foo\n");
    expect(
        &run_gz(&r),
        "secrets.history",
        Fail,
        Some("root/.bash_history"),
    );
}

#[test]
fn sshd_password_authentication_must_be_off() {
    // default is yes
    let mut r = deb();
    r.remove("./etc/ssh/sshd_config.d/50-lxcforge.conf");
    expect(
        &run_gz(&r),
        "secrets.sshd-password-auth",
        Fail,
        Some("etc/ssh/sshd_config"),
    );
    // first match wins: an earlier drop-in says yes
    let mut r = deb();
    r.file(
        "./etc/ssh/sshd_config.d/10-cloud.conf",
        b"PasswordAuthentication yes\n",
    );
    expect(
        &run_gz(&r),
        "secrets.sshd-password-auth",
        Fail,
        Some("etc/ssh/sshd_config.d/10-cloud.conf"),
    );
    // a later drop-in saying yes does not matter
    let mut r = deb();
    r.file(
        "./etc/ssh/sshd_config.d/90-late.conf",
        b"PasswordAuthentication yes\n",
    );
    expect(&run_gz(&r), "secrets.sshd-password-auth", Pass, None);
    // an explicit yes in sshd_config before the Include
    let mut r = deb();
    r.file(
        "./etc/ssh/sshd_config",
        b"PasswordAuthentication yes\nInclude /etc/ssh/sshd_config.d/*.conf\n",
    );
    expect(
        &run_gz(&r),
        "secrets.sshd-password-auth",
        Fail,
        Some("etc/ssh/sshd_config"),
    );
    // only inside a Match block: not global
    let mut r = deb();
    r.remove("./etc/ssh/sshd_config.d/50-lxcforge.conf");
    r.file(
        "./etc/ssh/sshd_config",
        b"Match User backup\n  PasswordAuthentication no\n",
    );
    expect(&run_gz(&r), "secrets.sshd-password-auth", Fail, None);
}

#[test]
fn private_keys_fail_outside_etc_ssl() {
    let mut r = deb();
    r.dir("./root/.ssh/");
    r.file("./root/.ssh/id_ed25519", b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk\n-----END OPENSSH PRIVATE KEY-----\n");
    expect(
        &run_gz(&r),
        "secrets.private-keys",
        Fail,
        Some("root/.ssh/id_ed25519"),
    );
    // the marker split across read chunks, deep inside a large file
    let mut big = vec![b'a'; 65536 - 5];
    big.extend_from_slice(b"\n-----BEGIN RSA PRIVATE KEY-----\n");
    let mut r = deb();
    r.file("./etc/app/key.pem", &big);
    expect(
        &run_gz(&r),
        "secrets.private-keys",
        Fail,
        Some("etc/app/key.pem"),
    );
    let mut r = deb();
    r.file(
        "./etc/ssl/private/ssl-cert-snakeoil.key",
        b"-----BEGIN PRIVATE KEY-----\n",
    );
    r.file("./usr/share/doc.pem", b"-----BEGIN PRIVATE KEY-----\n");
    expect_clean(&run_gz(&r));
}

#[test]
fn credentials_fail() {
    let cases: &[(&str, &[u8])] = &[
        (
            "./root/.docker/config.json",
            br#"{"auths":{"registry.example":{"auth":"dXNlcjpwdw=="}}}"#,
        ),
        (
            "./home/ci/.aws/credentials",
            b"[default]\naws_access_key_id=AKIA\n",
        ),
        ("./root/.kube/config", b"apiVersion: v1\n"),
        ("./root/.git-credentials", b"https://u:p@example.com\n"),
        (
            "./home/ci/.netrc",
            b"machine example.com login u password p\n",
        ),
        (
            "./etc/apt/auth.conf.d/vendor.conf",
            b"machine apt.example.com login u password s3cret\n",
        ),
    ];
    for (path, content) in cases {
        let mut r = deb();
        r.file(path, content);
        expect(
            &run_gz(&r),
            "secrets.credentials",
            Fail,
            Some(path.trim_start_matches("./")),
        );
    }
    // harmless variants
    let mut r = deb();
    r.file("./root/.docker/config.json", br#"{"auths":{}}"#);
    r.file(
        "./etc/apt/auth.conf.d/empty.conf",
        b"# machine x login y password z\n",
    );
    expect_clean(&run_gz(&r));
}

#[test]
fn init_must_be_systemd() {
    let mut r = deb();
    r.file_mode("./usr/bin/busybox", &elf(0x3e), 0o755);
    r.symlink("./usr/sbin/init", "../bin/busybox");
    let rep = run_gz(&r);
    expect(&rep, "pve.init", Warn, Some("sbin/init"));
    expect_clean(&rep);
}

#[test]
fn bin_sh_must_be_elf() {
    let mut r = deb();
    r.remove("./usr/bin/sh");
    expect(&run_gz(&r), "pve.arch", Fail, Some("bin/sh"));
    let mut r = deb();
    r.file_mode("./usr/bin/dash", b"#!/bin/busybox sh\n", 0o755);
    expect(&run_gz(&r), "pve.arch", Fail, Some("bin/sh"));
    let mut r = deb();
    r.file_mode("./usr/bin/dash", &elf(0xb7), 0o755);
    let rep = run_gz(&r);
    expect(&rep, "pve.arch", Pass, None);
    assert!(rep.find("pve.arch").any(|c| c.message.contains("arm64")));
}

#[test]
fn os_release_fallback_and_unknown_distro() {
    // /etc/os-release missing: /usr/lib/os-release is read
    let mut r = deb();
    r.remove("./etc/os-release");
    expect_clean(&run_gz(&r));
    // unknown ID with /etc/debian_version: warn, then Debian rules
    let mut r = deb();
    r.file("./usr/lib/os-release", b"ID=dietpi\n");
    let rep = run_gz(&r);
    expect(&rep, "pve.distro", Warn, Some("etc/os-release"));
    expect(&rep, "pve.version", Pass, None);
    // unknown ID, no fallback file: pve-container dies
    let mut r = deb();
    r.file("./usr/lib/os-release", b"ID=mystery\n");
    r.remove("./etc/debian_version");
    expect(&run_gz(&r), "pve.distro", Fail, None);
}

#[test]
fn report_api() {
    let mut r = deb();
    r.file("./root/.bash_history", b"ls\n");
    let rep = run_gz(&r);
    assert!(!rep.passed());
    assert_eq!(rep.exit_code(), 1);
    let (p, _w, f) = rep.counts();
    assert!(p > 10 && f == 1, "{}", rep.render_table());
    let json = serde_json::to_value(&rep).unwrap();
    assert_eq!(json["file"], "t.tar.gz");
    assert!(
        json["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["status"] == "fail"
                && c["id"] == "secrets.history"
                && c["member"] == "root/.bash_history")
    );
    assert!(rep.render_table().contains("FAIL   secrets.history"));
}

/// Deterministic pseudo-random text over `alphabet` (xorshift), so no token is a literal here.
fn rand_str(seed: u64, len: usize, alphabet: &[u8]) -> String {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            alphabet[(x % alphabet.len() as u64) as usize] as char
        })
        .collect()
}

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const URLSAFE: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const HEX: &[u8] = b"0123456789abcdef";

fn uuid(seed: u64) -> String {
    let h = rand_str(seed, 32, HEX);
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..]
    )
}

/// The report must name the member but never print the token.
#[track_caller]
fn token_finding(r: &Rootfs, member: &str, status: lxcforge::validate::Status, secret: &str) {
    let rep = run_gz(r);
    expect(&rep, "secrets.tokens", status, Some(member));
    let table = rep.render_table();
    let json = serde_json::to_string(&rep).unwrap();
    let tail = &secret[secret.len() - 12..];
    assert!(
        !table.contains(tail) && !json.contains(tail),
        "the secret is printed:\n{table}"
    );
}

#[test]
fn known_token_shapes_fail() {
    let aws = format!(
        "AKIA{}",
        rand_str(1, 16, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
    );
    let ghp = format!("ghp_{}", rand_str(2, 36, ALNUM));
    let pat = format!(
        "github_pat_{}_{}",
        rand_str(3, 22, ALNUM),
        rand_str(4, 59, ALNUM)
    );
    let glpat = format!("glpat-{}", rand_str(5, 20, URLSAFE));
    let slack = format!("xoxb-1234567890-9876543210-{}", rand_str(6, 24, ALNUM));
    let b64 = |s: u64, n| rand_str(s, n, URLSAFE);
    let jwt = format!(
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ{}.{}",
        b64(7, 40),
        b64(8, 43)
    );
    let pve_secret = uuid(9);
    let npm = format!("npm_{}", rand_str(10, 36, ALNUM));
    let pypi = format!("pypi-AgEIcHlwaS5vcmc{}", b64(11, 60));
    let dckr = format!("dckr_pat_{}", b64(12, 27));
    let google = format!("AIza{}", b64(13, 35));
    let cases: Vec<(&str, String, String)> = vec![
        (
            "./root/.bashrc",
            format!("# ~/.bashrc\nexport AWS_ACCESS_KEY_ID={aws}\n"),
            aws.clone(),
        ),
        (
            "./home/ci/.profile",
            format!("export GITHUB_TOKEN={ghp}\n"),
            ghp.clone(),
        ),
        (
            "./home/ci/.config/gh/hosts.yml",
            format!("github.com:\n    oauth_token: {pat}\n"),
            pat.clone(),
        ),
        (
            "./etc/gitlab-runner/config.toml",
            format!("[[runners]]\n  token = \"{glpat}\"\n"),
            glpat.clone(),
        ),
        (
            "./etc/default/notify",
            format!("# posts to Slack\nSLACK={slack}\n"),
            slack.clone(),
        ),
        (
            "./etc/app/session.json",
            format!("{{\"session\": \"{jwt}\"}}\n"),
            jwt.clone(),
        ),
        (
            "./root/pve.sh",
            format!(
                "curl -H 'Authorization: PVEAPIToken=terraform@pve!provider={pve_secret}' https://pve:8006/api2/json\n"
            ),
            pve_secret.clone(),
        ),
        (
            "./root/.terraformrc.tfvars",
            format!(
                "pm_api_token_id = \"terraform@pve!tf\"\npm_api_token_secret = \"{pve_secret}\"\n"
            ),
            pve_secret.clone(),
        ),
        (
            "./root/.npmrc",
            format!("//registry.npmjs.org/:_authToken={npm}\n"),
            npm.clone(),
        ),
        (
            "./root/.pypirc",
            format!("[pypi]\nusername = __token__\npassword = {pypi}\n"),
            pypi.clone(),
        ),
        (
            "./etc/ci/docker-login",
            format!("echo {dckr} | docker login -u ci --password-stdin\n"),
            dckr.clone(),
        ),
        (
            "./etc/app/maps.ini",
            format!("[maps]\nkey={google}\n"),
            google.clone(),
        ),
    ];
    for (path, content, secret) in &cases {
        let mut r = deb();
        r.file(path, content.as_bytes());
        token_finding(&r, path.trim_start_matches("./"), Fail, secret);
    }
}

#[test]
fn generic_high_entropy_values_warn() {
    let tok = rand_str(20, 40, URLSAFE);
    for (path, content) in [
        ("./etc/app/app.conf", format!("client_id = {tok}\n")),
        ("./root/.env", format!("export UPSTREAM_KEY=\"{tok}\"\n")),
        ("./home/ci/app.yaml", format!("upstream:\n  key: '{tok}'\n")),
    ] {
        let mut r = deb();
        r.file(path, content.as_bytes());
        token_finding(&r, path.trim_start_matches("./"), Warn, &tok);
        expect_clean(&run_gz(&r)); // a warning, not a failure
    }
    // hex only counts under a key naming a secret
    let hex = rand_str(21, 40, HEX);
    let mut r = deb();
    r.file(
        "./etc/app/api.conf",
        format!("api_key = {hex}\n").as_bytes(),
    );
    token_finding(&r, "etc/app/api.conf", Warn, &hex);
}

#[test]
fn what_a_clean_rootfs_holds_is_not_a_token() {
    let mut r = deb();
    // UUIDs in systemd units and fstab
    r.file(
        "./etc/systemd/system/data.mount",
        format!(
            "[Unit]\nDescription=Data\n[Mount]\nWhat=UUID={}\nWhere=/data\n[Install]\nWantedBy=multi-user.target\n",
            uuid(30)
        )
        .as_bytes(),
    );
    r.file(
        "./etc/systemd/system/app.service",
        format!(
            "[Service]\nEnvironment=APP_INSTANCE={}\nExecStart=/usr/lib/app/app-server-daemon-wrapper\n",
            uuid(31)
        )
        .as_bytes(),
    );
    r.file(
        "./etc/fstab",
        format!("UUID={} / ext4 errors=remount-ro 0 1\n", uuid(32)).as_bytes(),
    );
    // sha256 / md5 in dpkg and apt files, a commit id in the provenance stamp
    r.file(
        "./etc/apt/local/Release",
        format!(
            "SHA256:\n {} 1234 main/binary-amd64/Packages\nMD5Sum: {}\n",
            rand_str(33, 64, HEX),
            rand_str(34, 32, HEX)
        )
        .as_bytes(),
    );
    r.file(
        "./etc/dpkg/dpkg.cfg.d/local",
        format!("# conffile hash\nsha256={}\n", rand_str(35, 64, HEX)).as_bytes(),
    );
    r.file(
        "./etc/lxcforge-release",
        format!(
            "LXCFORGE_GIT_COMMIT={}\nLXCFORGE_BASE_DIGEST=sha256:{}\n",
            rand_str(36, 40, HEX),
            rand_str(37, 64, HEX)
        )
        .as_bytes(),
    );
    r.file("./etc/debian_version", b"12.7\n");
    // a PEM certificate bundle under etc/ssl/certs and an armored PGP public key
    let mut pem = String::new();
    for (i, label) in ["CERTIFICATE", "CERTIFICATE", "PUBLIC KEY"]
        .iter()
        .enumerate()
    {
        pem.push_str(&format!("-----BEGIN {label}-----\n"));
        for l in 0..20 {
            pem.push_str(&rand_str(40 + i as u64 * 100 + l, 64, URLSAFE));
            pem.push('\n');
        }
        pem.push_str(&format!(
            "{}==\n-----END {label}-----\n",
            rand_str(99, 22, URLSAFE)
        ));
    }
    r.dir("./etc/ssl/certs/");
    r.file("./etc/ssl/certs/ca-certificates.crt", pem.as_bytes());
    r.file(
        "./etc/apt/trusted.gpg.d/vendor.asc",
        format!(
            "-----BEGIN PGP PUBLIC KEY BLOCK-----\nComment: Hostname: keys.example.org\n\n{}\n={}\n-----END PGP PUBLIC KEY BLOCK-----\n",
            rand_str(50, 64, URLSAFE),
            rand_str(51, 4, URLSAFE)
        )
        .as_bytes(),
    );
    // a DNSSEC key split over lines, an SSH public key, identifiers, paths, a secret in a comment
    r.file(
        "./etc/bind/bind.keys",
        format!(
            "trust-anchors {{\n  . initial-key 257 3 8 \"AwEAA{}\n    {}\";\n}};\n",
            rand_str(52, 50, URLSAFE),
            rand_str(53, 56, URLSAFE)
        )
        .as_bytes(),
    );
    r.file(
        "./root/.ssh/known_hosts.json",
        format!(
            "{{\"key\": \"AAAAC3NzaC1lZDI1NTE5AAAAI{}\"}}\n",
            rand_str(54, 43, URLSAFE)
        )
        .as_bytes(),
    );
    r.file(
        "./etc/ssl/openssl.cnf",
        b"Ciphersuites = TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256\nname = org_freedesktop_NetworkManager1\nPATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin\n",
    );
    r.file(
        "./etc/app/example.conf",
        format!("# token = {}\n", rand_str(55, 40, URLSAFE)).as_bytes(),
    );
    let rep = run_gz(&r);
    expect(&rep, "secrets.tokens", Pass, None);
    assert_eq!(
        rep.find("secrets.tokens").count(),
        1,
        "{}",
        rep.render_table()
    );
}

#[test]
fn token_scan_skips_binary_and_oversized_files() {
    let ghp = format!("ghp_{}", rand_str(60, 36, ALNUM));
    let mut bin = b"\x7fELF\x02\x01\x01\0\0\0".to_vec();
    bin.extend_from_slice(format!("token={ghp}\n").as_bytes());
    let mut big = format!("token={ghp}\n").into_bytes();
    big.resize((1 << 20) + 1, b'#');
    let mut r = deb();
    r.file("./etc/app/blob.bin", &bin);
    r.file("./etc/app/huge.conf", &big);
    // outside /etc, /root, /home nothing is scanned
    r.file(
        "./usr/share/doc/app/README",
        format!("token={ghp}\n").as_bytes(),
    );
    let rep = run_gz(&r);
    expect(&rep, "secrets.tokens", Pass, None);
    assert!(
        rep.render_table()
            .contains("1 file(s) over 1 MiB not scanned"),
        "{}",
        rep.render_table()
    );
    // the same token in a small text file is found, even on a long line split across reads
    let mut long = vec![b'x'; 200_000];
    long.extend_from_slice(format!(" token={ghp}\n").as_bytes());
    let mut r = deb();
    r.file("./etc/app/long.conf", &long);
    token_finding(&r, "etc/app/long.conf", Fail, &ghp);
}
