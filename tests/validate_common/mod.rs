//! Synthetic template archives for the validator tests: a raw tar writer (so hostile headers
//! can be crafted byte by byte) and a small Debian/Ubuntu-like rootfs.
#![allow(dead_code)]

use lxcforge::validate::{PveVersion, Report, Status, ValidateOptions, validate_reader};
use std::io::{Cursor, Write};

#[derive(Clone, Debug)]
pub struct Entry {
    pub name: Vec<u8>,
    pub typ: u8,
    pub data: Vec<u8>,
    pub link: Vec<u8>,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
}

fn octal(field: &mut [u8], v: u64) {
    let w = field.len() - 1;
    let s = format!("{v:0w$o}");
    assert!(
        s.len() <= w,
        "value {v} does not fit an octal field; use base256"
    );
    field[..w].copy_from_slice(s.as_bytes());
    field[w] = 0;
}

pub fn base256(field: &mut [u8], v: u64) {
    for b in field.iter_mut() {
        *b = 0;
    }
    let n = field.len();
    let bytes = v.to_be_bytes();
    let k = (n - 1).min(8);
    field[n - k..].copy_from_slice(&bytes[8 - k..]);
    field[0] = 0x80;
}

pub fn set_checksum(h: &mut [u8; 512]) {
    h[148..156].copy_from_slice(b"        ");
    let sum: u64 = h.iter().map(|b| *b as u64).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
}

/// A ustar header (name must fit 100 bytes; longer names go through a GNU `L` record).
pub fn header(
    name: &[u8],
    typ: u8,
    size: u64,
    link: &[u8],
    mode: u32,
    uid: u64,
    gid: u64,
) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len().min(100)].copy_from_slice(&name[..name.len().min(100)]);
    octal(&mut h[100..108], mode as u64);
    if uid > 0o7777777 {
        base256(&mut h[108..116], uid)
    } else {
        octal(&mut h[108..116], uid)
    }
    if gid > 0o7777777 {
        base256(&mut h[116..124], gid)
    } else {
        octal(&mut h[116..124], gid)
    }
    if size > 0o77777777777 {
        base256(&mut h[124..136], size)
    } else {
        octal(&mut h[124..136], size)
    }
    octal(&mut h[136..148], 1_700_000_000);
    h[156] = typ;
    h[157..157 + link.len().min(100)].copy_from_slice(&link[..link.len().min(100)]);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    set_checksum(&mut h);
    h
}

pub fn pad(out: &mut Vec<u8>) {
    let r = out.len() % 512;
    if r != 0 {
        out.resize(out.len() + 512 - r, 0);
    }
}

pub fn write_entry(out: &mut Vec<u8>, e: &Entry) {
    if e.name.len() > 100 {
        out.extend_from_slice(&header(
            b"././@LongLink",
            b'L',
            e.name.len() as u64 + 1,
            b"",
            0o644,
            0,
            0,
        ));
        out.extend_from_slice(&e.name);
        out.push(0);
        pad(out);
    }
    out.extend_from_slice(&header(
        &e.name,
        e.typ,
        e.data.len() as u64,
        &e.link,
        e.mode,
        e.uid,
        e.gid,
    ));
    out.extend_from_slice(&e.data);
    pad(out);
}

/// Entries + end-of-archive marker, padded to a 10 KiB record like GNU tar.
pub fn tar_bytes(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        write_entry(&mut out, e);
    }
    out.extend_from_slice(&[0u8; 1024]);
    let r = out.len() % 10240;
    if r != 0 {
        out.resize(out.len() + 10240 - r, 0);
    }
    out
}

pub fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}
pub fn zstd(b: &[u8]) -> Vec<u8> {
    zstd::encode_all(b, 3).unwrap()
}
pub fn xz(b: &[u8]) -> Vec<u8> {
    let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

/// amd64 ELF header (enough for e_machine).
pub fn elf(machine: u16) -> Vec<u8> {
    let mut h = vec![0u8; 64];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = 2;
    h[5] = 1;
    h[6] = 1;
    h[16] = 3;
    h[18..20].copy_from_slice(&machine.to_le_bytes());
    h.extend_from_slice(&[0x90; 200]);
    h
}

#[derive(Clone)]
pub struct Rootfs {
    pub entries: Vec<Entry>,
}

fn e(name: &str, typ: u8, data: &[u8], link: &str, mode: u32) -> Entry {
    Entry {
        name: name.as_bytes().to_vec(),
        typ,
        data: data.to_vec(),
        link: link.as_bytes().to_vec(),
        mode,
        uid: 0,
        gid: 0,
    }
}

impl Rootfs {
    /// A minimal merged-/usr Debian 12 root filesystem, as lxcforge packs it (`./` names).
    pub fn debian(debian_version: &str) -> Rootfs {
        let os = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nID=debian\n";
        let mut r = Rootfs::base(os);
        r.file(
            "./etc/debian_version",
            format!("{debian_version}\n").as_bytes(),
        );
        r
    }

    pub fn ubuntu(release: &str) -> Rootfs {
        let os = format!(
            "PRETTY_NAME=\"Ubuntu {release}\"\nNAME=\"Ubuntu\"\nVERSION_ID=\"{release}\"\nID=ubuntu\nID_LIKE=debian\n"
        );
        let mut r = Rootfs::base(&os);
        r.file("./etc/debian_version", b"trixie/sid\n");
        r.file(
            "./etc/lsb-release",
            format!("DISTRIB_ID=Ubuntu\nDISTRIB_RELEASE={release}\nDISTRIB_CODENAME=x\nDISTRIB_DESCRIPTION=\"Ubuntu {release}\"\n").as_bytes(),
        );
        r
    }

    fn base(os_release: &str) -> Rootfs {
        let mut r = Rootfs { entries: vec![] };
        r.dir("./");
        r.symlink("./bin", "usr/bin");
        r.dir("./dev/");
        r.dir("./etc/");
        r.file("./etc/hostname", b"localhost\n");
        r.file("./etc/hosts", b"127.0.0.1\tlocalhost\n");
        r.file("./etc/machine-id", b"");
        r.symlink("./etc/os-release", "../usr/lib/os-release");
        r.file(
            "./etc/passwd",
            b"root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1::/usr/sbin:/usr/sbin/nologin\n",
        );
        r.file("./etc/resolv.conf", b"");
        r.file("./etc/shadow", b"root:*:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\nsvc:!$6$abc$def:19000::::::\n");
        r.dir("./etc/ssh/");
        r.file("./etc/ssh/sshd_config", b"Include /etc/ssh/sshd_config.d/*.conf\n#PasswordAuthentication yes\nKbdInteractiveAuthentication no\nUsePAM yes\n");
        r.dir("./etc/ssh/sshd_config.d/");
        r.file(
            "./etc/ssh/sshd_config.d/50-lxcforge.conf",
            b"PasswordAuthentication no\n",
        );
        r.dir("./etc/ssl/");
        r.dir("./etc/ssl/private/");
        r.symlink("./lib", "usr/lib");
        r.dir("./home/");
        r.dir("./root/");
        r.file("./root/.bashrc", b"# ~/.bashrc\n");
        r.symlink("./sbin", "usr/sbin");
        r.dir("./usr/");
        r.dir("./usr/bin/");
        r.file_mode("./usr/bin/dash", &elf(0x3e), 0o755);
        r.symlink("./usr/bin/sh", "dash");
        r.dir("./usr/lib/");
        r.file("./usr/lib/os-release", os_release.as_bytes());
        r.dir("./usr/lib/systemd/");
        r.file_mode("./usr/lib/systemd/systemd", &elf(0x3e), 0o755);
        r.dir("./usr/sbin/");
        r.symlink("./usr/sbin/init", "../lib/systemd/systemd");
        r.dir("./var/");
        r.dir("./var/lib/");
        r.dir("./var/lib/dbus/");
        r.symlink("./var/lib/dbus/machine-id", "/etc/machine-id");
        r
    }

    pub fn push(&mut self, e: Entry) -> &mut Self {
        self.entries.push(e);
        self
    }
    pub fn dir(&mut self, name: &str) -> &mut Self {
        self.push(e(name, b'5', b"", "", 0o755))
    }
    pub fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.file_mode(name, data, 0o644)
    }
    pub fn file_mode(&mut self, name: &str, data: &[u8], mode: u32) -> &mut Self {
        self.remove(name);
        self.push(e(name, b'0', data, "", mode))
    }
    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.remove(name);
        self.push(e(name, b'2', b"", target, 0o777))
    }
    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.push(e(name, b'1', b"", target, 0o644))
    }
    pub fn device(&mut self, name: &str) -> &mut Self {
        self.push(e(name, b'3', b"", "", 0o666))
    }
    pub fn remove(&mut self, name: &str) -> &mut Self {
        self.entries.retain(|e| e.name != name.as_bytes());
        self
    }
    pub fn map_names(&mut self, f: impl Fn(&str) -> String) -> &mut Self {
        for e in &mut self.entries {
            e.name = f(&String::from_utf8_lossy(&e.name)).into_bytes();
        }
        self
    }
    pub fn tar(&self) -> Vec<u8> {
        tar_bytes(&self.entries)
    }
    pub fn tar_gz(&self) -> Vec<u8> {
        gzip(&self.tar())
    }
}

pub fn opts(pve: Option<&str>) -> ValidateOptions {
    ValidateOptions {
        pve_version: pve.map(|v| v.parse::<PveVersion>().unwrap()),
        ..Default::default()
    }
}

pub fn run(name: &str, bytes: &[u8], pve: Option<&str>) -> Report {
    validate_reader(name, Cursor::new(bytes.to_vec()), &opts(pve)).expect("readable")
}

pub fn run_gz(r: &Rootfs) -> Report {
    run("t.tar.gz", &r.tar_gz(), None)
}

/// Asserts that `id` has a finding with `status` (and `member`, if given).
#[track_caller]
pub fn expect(report: &Report, id: &str, status: Status, member: Option<&str>) {
    let hit = report.checks.iter().any(|c| {
        c.id == id && c.status == status && member.is_none_or(|m| c.member.as_deref() == Some(m))
    });
    assert!(
        hit,
        "expected {id} {status:?} member {member:?}\n{}",
        report.render_table()
    );
}

#[track_caller]
pub fn expect_clean(report: &Report) {
    assert!(
        report.passed(),
        "unexpected FAIL:\n{}",
        report.render_table()
    );
}
