//! Shared helpers for the packer tests: a writer of Docker-like export streams, an independent
//! reader of the packer's output, and GNU tar extraction with Proxmox's flags.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use lxcforge::pack::{self, Compression, PackOptions, PackReport};

pub const EPOCH: u64 = 1_700_000_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    Dir,
    File(Vec<u8>),
    Symlink(Vec<u8>),
    /// target path (same form as `Entry::path`)
    HardLink(Vec<u8>),
    Fifo,
    Char(u32, u32),
    Block(u32, u32),
}

/// One member as Docker would stream it. `path` has no `./` and no trailing `/`.
#[derive(Clone, Debug)]
pub struct Entry {
    pub path: Vec<u8>,
    pub node: Node,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    /// xattr name (e.g. `user.foo`) → value
    pub xattrs: Vec<(String, Vec<u8>)>,
    /// Further PAX records written as they are (e.g. `SCHILY.acl.access`).
    pub pax_extra: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Entry {
    pub fn new(path: &str, node: Node, mode: u32) -> Entry {
        Entry::raw(path.as_bytes(), node, mode)
    }
    pub fn raw(path: &[u8], node: Node, mode: u32) -> Entry {
        Entry {
            path: path.to_vec(),
            node,
            mode,
            uid: 0,
            gid: 0,
            mtime: EPOCH - 1000,
            xattrs: vec![],
            pax_extra: vec![],
        }
    }
    pub fn dir(path: &str) -> Entry {
        Entry::new(path, Node::Dir, 0o755)
    }
    pub fn file(path: &str, data: &[u8], mode: u32) -> Entry {
        Entry::new(path, Node::File(data.to_vec()), mode)
    }
}

/// PAX records, written independently of the packer's encoder.
pub fn pax_records(recs: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in recs {
        let base = k.len() + v.len() + 3;
        let mut len = base + 1;
        while base + len.to_string().len() != len {
            len += 1;
        }
        out.extend_from_slice(format!("{len} ").as_bytes());
        out.extend_from_slice(k);
        out.push(b'=');
        out.extend_from_slice(v);
        out.push(b'\n');
    }
    out
}

fn pad(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(512) {
        out.push(0);
    }
}

/// ustar prefix/name split as Go's `archive/tar` does it (name ≤ 100, prefix ≤ 155).
fn ustar_split(name: &[u8]) -> Option<(&[u8], &[u8])> {
    if name.len() > 256 {
        return None;
    }
    let mut cut = None;
    for (i, &b) in name.iter().enumerate() {
        if b == b'/' && i <= 155 && name.len() - i - 1 <= 100 && i > 0 && name.len() - i - 1 > 0 {
            cut = Some(i);
            break;
        }
    }
    cut.map(|i| (&name[..i], &name[i + 1..]))
}

/// Writes entries as Docker's export does: ustar headers, mode with file-type bits, names
/// without `./`, `/` after directories, long names via ustar prefix or PAX `path`, long link
/// targets via PAX `linkpath`, xattrs as `SCHILY.xattr.*`, `uname` set (to check it is dropped).
pub fn docker_tar(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        append_docker(&mut out, e);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

pub fn append_docker(out: &mut Vec<u8>, e: &Entry) {
    use tar::EntryType as T;
    let mut name = e.path.clone();
    if e.node == Node::Dir {
        name.push(b'/');
    }
    let (ty, typebits, size, link): (T, u32, u64, Option<&[u8]>) = match &e.node {
        Node::Dir => (T::Directory, 0o040000, 0, None),
        Node::File(d) => (T::Regular, 0o100000, d.len() as u64, None),
        Node::Symlink(t) => (T::Symlink, 0o120000, 0, Some(t)),
        Node::HardLink(t) => (T::Link, 0o100000, 0, Some(t)),
        Node::Fifo => (T::Fifo, 0o010000, 0, None),
        Node::Char(..) => (T::Char, 0o020000, 0, None),
        Node::Block(..) => (T::Block, 0o060000, 0, None),
    };
    let mut pax: Vec<(Vec<u8>, Vec<u8>)> = vec![];
    let mut h = tar::Header::new_ustar();
    {
        let u = h.as_ustar_mut().unwrap();
        // alternate between the two long-name encodings Go uses, keyed on the name
        let use_prefix = name.iter().map(|&b| b as usize).sum::<usize>() % 2 == 0;
        if name.len() <= 100 {
            u.name[..name.len()].copy_from_slice(&name);
        } else if let (true, Some((prefix, rest))) = (use_prefix, ustar_split(&name)) {
            u.prefix[..prefix.len()].copy_from_slice(prefix);
            u.name[..rest.len()].copy_from_slice(rest);
        } else {
            u.name.copy_from_slice(&name[..100]);
            pax.push((b"path".to_vec(), name.clone()));
        }
        if let Some(link) = link {
            if link.len() <= 100 {
                u.linkname[..link.len()].copy_from_slice(link);
            } else {
                u.linkname.copy_from_slice(&link[..100]);
                pax.push((b"linkpath".to_vec(), link.to_vec()));
            }
        }
        u.uname[..4].copy_from_slice(b"root");
    }
    for (k, v) in &e.xattrs {
        pax.push((format!("SCHILY.xattr.{k}").into_bytes(), v.clone()));
    }
    pax.extend(e.pax_extra.iter().cloned());
    h.set_entry_type(ty);
    h.set_mode(typebits | e.mode);
    h.set_uid(e.uid);
    h.set_gid(e.gid);
    h.set_mtime(e.mtime);
    h.set_size(size);
    if let Node::Char(ma, mi) | Node::Block(ma, mi) = e.node {
        h.set_device_major(ma).unwrap();
        h.set_device_minor(mi).unwrap();
    } else {
        h.set_device_major(0).unwrap();
        h.set_device_minor(0).unwrap();
    }
    h.set_cksum();
    if !pax.is_empty() {
        let data = pax_records(&pax);
        let mut x = tar::Header::new_ustar();
        x.as_ustar_mut().unwrap().name[..14].copy_from_slice(b"PaxHeaders.0/x");
        x.set_entry_type(T::XHeader);
        x.set_mode(0o644);
        x.set_uid(0);
        x.set_gid(0);
        x.set_mtime(0);
        x.set_size(data.len() as u64);
        x.set_cksum();
        out.extend_from_slice(x.as_bytes());
        out.extend_from_slice(&data);
        pad(out);
    }
    out.extend_from_slice(h.as_bytes());
    if let Node::File(d) = &e.node {
        out.extend_from_slice(d);
        pad(out);
    }
}

pub fn opts(dir: &Path) -> PackOptions {
    PackOptions {
        source_date_epoch: EPOCH,
        compression: Compression::Gzip { level: 6 },
        threads: 2,
        spool_dir: dir.to_path_buf(),
    }
}

/// Packs into a `Vec` (staged output path).
pub fn pack_vec(input: &[u8], o: &PackOptions) -> (Vec<u8>, PackReport) {
    let buf = SharedVec::default();
    let report = pack::pack(input, buf.clone(), o, &|_| {}).expect("pack");
    (buf.take(), report)
}

/// Packs into a regular file (direct output path) and returns its content.
pub fn pack_file(input: &[u8], o: &PackOptions, path: &Path) -> (Vec<u8>, PackReport) {
    let f = std::fs::File::create(path).unwrap();
    let report = pack::pack(input, f, o, &|_| {}).expect("pack");
    (std::fs::read(path).unwrap(), report)
}

/// A `Write + Send + 'static` handle on a shared buffer.
#[derive(Clone, Default)]
pub struct SharedVec(pub std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
impl SharedVec {
    pub fn take(&self) -> Vec<u8> {
        std::mem::take(&mut self.0.lock().unwrap())
    }
}
impl Write for SharedVec {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(data)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// One member of the packer's output, read by a reader independent of the packer's.
#[derive(Clone, Debug)]
pub struct Listed {
    pub name: Vec<u8>,
    pub ty: u8,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub link: Vec<u8>,
    pub pax: Vec<(Vec<u8>, Vec<u8>)>,
    pub data: Vec<u8>,
    pub uname: Vec<u8>,
    pub magic: Vec<u8>,
}

impl Listed {
    pub fn name_str(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }
}

fn parse_pax(mut d: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut v = vec![];
    while !d.is_empty() {
        let sp = d.iter().position(|&b| b == b' ').unwrap();
        let len: usize = std::str::from_utf8(&d[..sp]).unwrap().parse().unwrap();
        let rec = &d[sp + 1..len - 1];
        let eq = rec.iter().position(|&b| b == b'=').unwrap();
        v.push((rec[..eq].to_vec(), rec[eq + 1..].to_vec()));
        assert_eq!(d[len - 1], b'\n');
        d = &d[len..];
    }
    v
}

fn cstr(b: &[u8]) -> Vec<u8> {
    b.iter().take_while(|&&c| c != 0).copied().collect()
}

/// Lists an uncompressed tar (GNU `L`/`K`, PAX `x`), asserting it is well formed.
pub fn list(tar: &[u8]) -> Vec<Listed> {
    let mut out = vec![];
    let mut pos = 0;
    let (mut ln, mut lk, mut pax) = (None, None, vec![]);
    loop {
        assert!(pos + 512 <= tar.len(), "archive not terminated");
        let block = &tar[pos..pos + 512];
        if block.iter().all(|&b| b == 0) {
            assert!(
                tar[pos..].iter().all(|&b| b == 0),
                "data after the end marker"
            );
            assert!(tar.len() - pos >= 1024, "two zero blocks at the end");
            break;
        }
        let h = tar::Header::from_byte_slice(block);
        let size = h.entry_size().unwrap() as usize;
        let data = tar[pos + 512..pos + 512 + size].to_vec();
        pos += 512 + size.div_ceil(512) * 512;
        match h.entry_type().as_byte() {
            b'L' => ln = Some(cstr(&data)),
            b'K' => lk = Some(cstr(&data)),
            b'x' => pax = parse_pax(&data),
            ty => {
                let old = h.as_old();
                out.push(Listed {
                    name: ln.take().unwrap_or_else(|| cstr(&old.name)),
                    link: lk.take().unwrap_or_else(|| cstr(&old.linkname)),
                    ty,
                    mode: h.mode().unwrap(),
                    uid: h.uid().unwrap(),
                    gid: h.gid().unwrap(),
                    mtime: h.mtime().unwrap(),
                    pax: std::mem::take(&mut pax),
                    data,
                    uname: cstr(&h.as_gnu().unwrap().uname),
                    magic: block[257..265].to_vec(),
                });
            }
        }
    }
    out
}

pub fn find<'a>(l: &'a [Listed], name: &str) -> Option<&'a Listed> {
    l.iter().find(|m| m.name == name.as_bytes())
}

/// The tar part of the command Proxmox runs to extract a template (pve-container
/// `restore_tar_archive`, proxmox-api.md §8.2), archive on stdin, into `dir`.
pub fn proxmox_tar_args(compression: &Compression, dir: &Path) -> Vec<std::ffi::OsString> {
    let cflag = match compression {
        Compression::Gzip { .. } => "-z",
        Compression::Zstd { .. } => "--zstd",
    };
    let mut args: Vec<std::ffi::OsString> = [
        "xpf",
        "-",
        cflag,
        "--totals",
        "--one-file-system",
        "-p",
        "--sparse",
        "--numeric-owner",
        "--acls",
        "--xattrs",
        "--xattrs-include=user.*",
        "--xattrs-include=security.capability",
        "--warning=no-file-ignored",
        "--warning=no-xattr-write",
        "-C",
    ]
    .iter()
    .map(Into::into)
    .collect();
    args.push(dir.into());
    args.extend(["--skip-old-files", "--anchored", "--exclude", "./dev/*"].map(Into::into));
    args
}

/// Runs `cmd` with `input` on its stdin (fed from a thread, so a large input cannot deadlock
/// against the child's output pipes) and collects its output.
pub fn run_with_stdin(mut cmd: Command, input: &[u8]) -> std::process::Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let data = input.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    out
}

/// Extracts with the exact command Proxmox runs, as root. Returns tar's stderr minus the
/// `--totals` line; panics on a non-zero exit.
pub fn extract_like_proxmox(artifact: &[u8], compression: &Compression, dir: &Path) -> String {
    let mut tar = Command::new("tar");
    tar.args(proxmox_tar_args(compression, dir));
    let out = run_with_stdin(tar, artifact);
    let stderr: String = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| !l.starts_with("Total bytes read"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(
        out.status.success(),
        "tar failed ({}): {stderr}",
        out.status
    );
    stderr
}

/// What was extracted: relative path (no `./`) → (lstat, symlink target, content, xattrs).
#[derive(Debug)]
pub struct Found {
    pub meta: std::fs::Metadata,
    pub link: Option<Vec<u8>>,
    pub data: Option<Vec<u8>>,
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

pub fn scan(root: &Path) -> BTreeMap<Vec<u8>, Found> {
    let mut map = BTreeMap::new();
    fn walk(root: &Path, dir: &Path, map: &mut BTreeMap<Vec<u8>, Found>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p: PathBuf = e.unwrap().path();
            let rel = p
                .strip_prefix(root)
                .unwrap()
                .as_os_str()
                .as_bytes()
                .to_vec();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            let ft = meta.file_type();
            let link = ft.is_symlink().then(|| {
                std::fs::read_link(&p)
                    .unwrap()
                    .as_os_str()
                    .as_bytes()
                    .to_vec()
            });
            let data = ft.is_file().then(|| std::fs::read(&p).unwrap());
            let mut xattrs = BTreeMap::new();
            if ft.is_file() || ft.is_dir() {
                for name in xattr::list(&p).unwrap() {
                    let n = name.to_string_lossy().into_owned();
                    if n.starts_with("user.") || n == "security.capability" {
                        xattrs.insert(n, xattr::get(&p, &name).unwrap().unwrap_or_default());
                    }
                }
            }
            let is_dir = ft.is_dir();
            map.insert(
                rel,
                Found {
                    meta,
                    link,
                    data,
                    xattrs,
                },
            );
            if is_dir {
                walk(root, &p, map);
            }
        }
    }
    walk(root, root, &mut map);
    map
}

pub fn file_kind(m: &std::fs::Metadata) -> &'static str {
    let t = m.file_type();
    if t.is_dir() {
        "dir"
    } else if t.is_symlink() {
        "symlink"
    } else if t.is_file() {
        "file"
    } else if t.is_fifo() {
        "fifo"
    } else if t.is_char_device() {
        "char"
    } else if t.is_block_device() {
        "block"
    } else {
        "other"
    }
}

pub fn mode_of(m: &std::fs::Metadata) -> u32 {
    m.mode() & 0o7777
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}
