//! The multipart parser (ref §2.3) fed the same bodies split at every byte boundary (and at
//! random multi-way splits): the result must not depend on the split, except in the places
//! where real Proxmox's parser depends on it too (each has its own test below).

mod common;
use common::{BOUNDARY, Part, file, multipart, text};
use pve_emu::multipart::{Event, Multipart, Param, Params};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// Phase 100 reached `completes` times; params and the file data.
    Done {
        params: Vec<(String, String)>,
        data: Vec<u8>,
        completes: u32,
    },
    /// The parser died with this message.
    Died(String),
    /// All bytes fed, nothing decided (the server would wait for the timeout / ENOSPC).
    Pending,
}

/// Feeds `body` in pieces cut at `cuts` (each piece is one read event).
fn run(body: &[u8], cuts: &[usize], size: u64) -> Outcome {
    let mut mp = Multipart::new(BOUNDARY.as_bytes(), size, Params::new());
    let mut data = Vec::new();
    let mut rbuf = Vec::new();
    let mut completes = 0;
    let mut last = 0;
    let mut points: Vec<usize> = cuts
        .iter()
        .copied()
        .filter(|&c| c > 0 && c < body.len())
        .collect();
    points.push(body.len());
    for &p in &points {
        if p <= last {
            continue;
        }
        rbuf.extend_from_slice(&body[last..p]);
        last = p;
        let mut sink = |d: &[u8]| -> Result<(), String> {
            data.extend_from_slice(d);
            Ok(())
        };
        match mp.read_event(&mut rbuf, &mut sink) {
            Err(e) => return Outcome::Died(e),
            Ok(Event::Complete) => completes += 1,
            Ok(Event::Continue) => {}
        }
    }
    if completes == 0 {
        return Outcome::Pending;
    }
    let params = mp
        .params()
        .iter()
        .map(|(k, v)| {
            let v = match v {
                Param::Str(b) => String::from_utf8_lossy(b).into_owned(),
                other => format!("{other:?}"),
            };
            (k.clone(), v)
        })
        .collect();
    Outcome::Done {
        params,
        data,
        completes,
    }
}

fn whole(body: &[u8]) -> Outcome {
    run(body, &[], body.len() as u64)
}

fn done(params: &[(&str, &str)], data: &[u8]) -> Outcome {
    Outcome::Done {
        params: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        data: data.to_vec(),
        completes: 1,
    }
}

const DATA: &[u8] = b"\x1f\x8b binary\r\n--not-a-boundary\r\n\r\n tail bytes\r";

fn curl_body() -> Vec<u8> {
    multipart(
        BOUNDARY,
        &[
            text("content", "vztmpl"),
            file("filename", "x.tar.gz", DATA),
        ],
    )
}

fn checksum_body() -> Vec<u8> {
    multipart(
        BOUNDARY,
        &[
            text("content", "vztmpl"),
            text("checksum-algorithm", "sha256"),
            text("checksum", " ABC \t"),
            file("filename", " my file.tar.gz", DATA),
        ],
    )
}

#[test]
fn whole_bodies_parse() {
    assert_eq!(
        whole(&curl_body()),
        done(&[("content", "vztmpl"), ("filename", "x.tar.gz")], DATA)
    );
    // Values are trimmed; the file name is raw (normalised later by the handler).
    assert_eq!(
        whole(&checksum_body()),
        done(
            &[
                ("checksum", "ABC"),
                ("checksum-algorithm", "sha256"),
                ("content", "vztmpl"),
                ("filename", "my file.tar.gz")
            ],
            DATA
        )
    );
}

/// Where the file part's first header ends (after `filename="…"`) and its blank line ends.
fn file_header_window(body: &[u8]) -> (usize, usize) {
    let hdr = b"name=\"filename\"; filename=\"";
    let at = body.windows(hdr.len()).position(|w| w == hdr).unwrap() + hdr.len();
    let q = at + body[at..].iter().position(|&c| c == b'"').unwrap() + 1;
    let blank = q + body[q..].windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    (q, blank)
}

#[test]
fn every_two_way_split_gives_the_same_result_outside_the_file_headers() {
    for body in [curl_body(), checksum_body()] {
        let expected = whole(&body);
        let (q, blank) = file_header_window(&body);
        let tail = body.len() - 2; // the "\r\n" after "--BOUNDARY--"
        for k in 0..=body.len() {
            let got = run(&body, &[k], body.len() as u64);
            if (tail..body.len()).contains(&k) {
                // Split-dependent in real Proxmox too: the CRLF after the closing delimiter in
                // a read of its own re-enters phase 100 and calls the handler again (ref §11).
                let Outcome::Done { completes, .. } = &got else {
                    panic!("split {k}: {got:?}")
                };
                assert_eq!(*completes, 2, "split {k}");
            } else if (q..blank).contains(&k) {
                // Split-dependent in real Proxmox too: the header strip ran before the rest of
                // the headers had arrived, so they become file data (ref §2.3, phase 1 → 2).
                let Outcome::Done { data, .. } = &got else {
                    panic!("split {k}: {got:?}")
                };
                assert_eq!(&data[..blank - q], &body[q..blank], "split {k}");
                assert_eq!(&data[blank - q..], DATA, "split {k}");
            } else {
                assert_eq!(got, expected, "split at {k}");
            }
        }
    }
}

#[test]
fn random_multi_way_splits_give_the_same_result() {
    let mut rng = fastrand::Rng::with_seed(6);
    for body in [curl_body(), checksum_body()] {
        let expected = whole(&body);
        let (q, blank) = file_header_window(&body);
        for _ in 0..3000 {
            let n = rng.usize(1..12);
            let mut cuts: Vec<usize> = (0..n).map(|_| rng.usize(0..=body.len())).collect();
            cuts.sort();
            let tail = body.len() - 2;
            if cuts
                .iter()
                .any(|c| (q..blank).contains(c) || (tail..body.len()).contains(c))
            {
                continue;
            }
            assert_eq!(
                run(&body, &cuts, body.len() as u64),
                expected,
                "cuts {cuts:?}"
            );
        }
    }
}

#[test]
fn byte_by_byte_feeding_works() {
    // One byte per read event: the file part's header always arrives in pieces, so its
    // remainder ends up in the data — exactly what pveproxy does with such a client.
    let body = curl_body();
    let cuts: Vec<usize> = (0..body.len()).collect();
    let (q, blank) = file_header_window(&body);
    let Outcome::Done { data, params, .. } = run(&body, &cuts, body.len() as u64) else {
        panic!()
    };
    assert_eq!(params[0], ("content".into(), "vztmpl".into()));
    assert_eq!(&data[..blank - q], &body[q..blank]);
    assert_eq!(&data[blank - q..], DATA);
}

#[test]
fn swapped_checksum_fields_fail_together_and_can_pass_apart() {
    // ref §2.3 rule 2: "If TCP happens to split the parts across reads, the reversed order
    // can succeed, so the failure is non-deterministic."
    let body = multipart(
        BOUNDARY,
        &[
            text("content", "vztmpl"),
            text("checksum", "abc"),
            text("checksum-algorithm", "md5"),
            file("filename", "x.tar.gz", DATA),
        ],
    );
    let Outcome::Died(msg) = whole(&body) else {
        panic!("whole body must fail")
    };
    assert!(
        msg.starts_with("wrong Content-Disposition 'form-data; name=\"checksum\"\r\n"),
        "{msg:?}"
    );
    assert!(msg.ends_with("' in multipart, expected 'form-data'\n"));
    let (q, blank) = file_header_window(&body);
    let mut passed = Vec::new();
    for k in 0..=body.len() {
        match run(&body, &[k], body.len() as u64) {
            Outcome::Died(_) => {}
            Outcome::Done { params, data, .. } => {
                assert!(params.contains(&("checksum".into(), "abc".into())));
                assert!(params.contains(&("checksum-algorithm".into(), "md5".into())));
                if !(q..blank).contains(&k) {
                    assert_eq!(data, DATA);
                }
                passed.push(k);
            }
            Outcome::Pending => panic!("split {k} pending"),
        }
    }
    // It passes exactly when the first read holds the checksum part with the delimiter after
    // it, but not yet the whole checksum-algorithm part with the delimiter after that.
    let ck = format!("abc\r\n--{BOUNDARY}\r\n");
    let ck_end = body
        .windows(ck.len())
        .position(|w| w == ck.as_bytes())
        .unwrap()
        + ck.len();
    let alg = format!("md5\r\n--{BOUNDARY}\r\n");
    let alg_end = body
        .windows(alg.len())
        .position(|w| w == alg.as_bytes())
        .unwrap()
        + alg.len();
    let tail = body.len() - 2;
    passed.retain(|k| *k < tail);
    assert_eq!(passed, (ck_end..alg_end).collect::<Vec<_>>());
}

#[test]
fn lf_only_bodies_report_the_500_message() {
    // With LF line ends the first line of the message has no CR, so pveproxy keeps the 500
    // (ref §11).
    let body = multipart(
        BOUNDARY,
        &[
            text("content", "vztmpl"),
            text("checksum", "abc"),
            text("checksum-algorithm", "md5"),
            file("filename", "x.tar.gz", b"data"),
        ],
    );
    let lf: Vec<u8> = String::from_utf8(body)
        .unwrap()
        .replace("\r\n", "\n")
        .into_bytes();
    let Outcome::Died(msg) = whole(&lf) else {
        panic!()
    };
    let first = msg.split('\n').next().unwrap();
    assert_eq!(
        first,
        "wrong Content-Disposition 'form-data; name=\"checksum\""
    );
    assert!(!first.contains('\r'));
}

#[test]
fn unknown_fields_and_names() {
    let name_file = multipart(
        BOUNDARY,
        &[text("content", "vztmpl"), file("file", "x.tar.gz", DATA)],
    );
    assert_eq!(
        whole(&name_file),
        Outcome::Died("wrong field name 'file' for file upload, expected 'filename' at /usr/share/perl5/PVE/APIServer/AnyEvent.pm line 1325.\n".into())
    );
    // A text field before a known field: that field's regex reaches across it.
    let before = multipart(
        BOUNDARY,
        &[
            text("node", "pve"),
            text("content", "vztmpl"),
            file("filename", "x.tar.gz", DATA),
        ],
    );
    let Outcome::Died(m) = whole(&before) else {
        panic!()
    };
    assert!(
        m.starts_with("wrong Content-Disposition 'form-data; name=\"node\"\r\n"),
        "{m:?}"
    );
    // After the known fields: swallowed into the file regex's name="(.*?)".
    let after = multipart(
        BOUNDARY,
        &[
            text("content", "vztmpl"),
            text("storage", "local"),
            file("filename", "x.tar.gz", DATA),
        ],
    );
    let Outcome::Died(m) = whole(&after) else {
        panic!()
    };
    assert!(m.starts_with("wrong field name 'storage\"\r\n"), "{m:?}");
    // Lower-case header, unquoted name, filename*= : never recognised → upload failed.
    for bad in [
        "content-disposition: form-data; name=\"filename\"; filename=\"x.tar.gz\"",
        "Content-Disposition: form-data; name=filename; filename=\"x.tar.gz\"",
        "Content-Disposition: form-data; name=\"filename\"; filename*=UTF-8''x.tar.gz",
        "Content-Disposition: form-data; filename=\"x.tar.gz\"; name=\"filename\"",
    ] {
        let body = format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"content\"\r\n\r\nvztmpl\r\n--{BOUNDARY}\r\n{bad}\r\n\r\ndata\r\n--{BOUNDARY}--\r\n"
        );
        assert_eq!(
            whole(body.as_bytes()),
            Outcome::Died(
                "upload failed at /usr/share/perl5/PVE/APIServer/AnyEvent.pm line 1370.\n".into()
            ),
            "{bad}"
        );
    }
    // Without a Content-Type in the file part (optional since 4.1-6).
    let no_ct = multipart(
        BOUNDARY,
        &[
            text("content", "vztmpl"),
            Part {
                content_type: None,
                ..file("filename", "x.tar.gz", DATA)
            },
        ],
    );
    assert_eq!(
        whole(&no_ct),
        done(&[("content", "vztmpl"), ("filename", "x.tar.gz")], DATA)
    );
    // Without content: the parser is happy, the handler will say it is missing.
    let no_content = multipart(BOUNDARY, &[file("filename", "x.tar.gz", DATA)]);
    assert_eq!(whole(&no_content), done(&[("filename", "x.tar.gz")], DATA));
}

#[test]
fn data_ends_at_the_first_closing_delimiter() {
    // Only `--B--` ends the data; a plain delimiter inside is data; one \r\n (or \n) before
    // the closing delimiter is dropped; whatever follows it in the same read is discarded.
    let data = format!("a\r\n--{BOUNDARY}\r\nb");
    let mut body = multipart(
        BOUNDARY,
        &[
            text("content", "vztmpl"),
            file("filename", "x.tar.gz", data.as_bytes()),
        ],
    );
    body.extend_from_slice(b"junk after the end");
    assert_eq!(
        whole(&body),
        done(
            &[("content", "vztmpl"), ("filename", "x.tar.gz")],
            data.as_bytes()
        )
    );
    let lf = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"filename\"; filename=\"x.tar.gz\"\r\n\r\nabc\n--{BOUNDARY}--"
    );
    assert_eq!(
        whole(lf.as_bytes()),
        done(&[("filename", "x.tar.gz")], b"abc")
    );
    let bare_cr = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"filename\"; filename=\"x.tar.gz\"\r\n\r\nabc\r--{BOUNDARY}--"
    );
    assert_eq!(
        whole(bare_cr.as_bytes()),
        done(&[("filename", "x.tar.gz")], b"abc\r")
    );
}

#[test]
fn stray_bytes_in_a_later_read_complete_again() {
    // ref §11: bytes after the closing boundary that arrive in a later read re-enter the
    // parser in phase 100, which calls the handler again.
    let body = curl_body();
    let end = body.len() - 2; // "--B--" | "\r\n"
    let Outcome::Done { completes, .. } = run(&body, &[end], body.len() as u64) else {
        panic!()
    };
    assert_eq!(completes, 2);
    let Outcome::Done { completes, .. } = whole(&body) else {
        panic!()
    };
    assert_eq!(completes, 1);
}

#[test]
fn content_length_rules() {
    let body = curl_body();
    // Shorter than the body: "upload failed" once that many bytes are in and the upload
    // did not complete in the same read.
    let short = run(&body[..40], &[], 10);
    assert_eq!(
        short,
        Outcome::Died(
            "upload failed at /usr/share/perl5/PVE/APIServer/AnyEvent.pm line 1370.\n".into()
        )
    );
    // Longer: the closing delimiter still completes the upload.
    assert!(matches!(
        run(&body, &[], body.len() as u64 + 100),
        Outcome::Done { .. }
    ));
    // Not all bytes yet and nothing recognised: the server waits.
    assert_eq!(run(b"garbage", &[], 100), Outcome::Pending);
}

#[test]
fn preamble_bytes_count_twice() {
    // AnyEvent.pm adds the preamble to `read` in phase 0 and again at the end of the call, so
    // with a preamble "upload failed" can fire before the last bytes are in (split-dependent).
    let mut body = b"preamble, ignored\r\n".to_vec();
    body.extend(curl_body());
    assert!(matches!(whole(&body), Outcome::Done { .. }));
    let close = format!("--{BOUNDARY}--");
    let at = body
        .windows(close.len())
        .position(|w| w == close.as_bytes())
        .unwrap();
    let cut = at + close.len() - 1; // all but the last '-' and the CRLF
    assert!(matches!(
        run(&body, &[cut], body.len() as u64),
        Outcome::Died(m) if m.starts_with("upload failed")
    ));
    let without: Vec<u8> = curl_body();
    let at = without
        .windows(close.len())
        .position(|w| w == close.as_bytes())
        .unwrap();
    let cut = at + close.len() - 1;
    assert!(matches!(
        run(&without, &[cut], without.len() as u64),
        Outcome::Done { .. }
    ));
}

#[test]
fn quoted_and_odd_content_types() {
    use pve_emu::multipart::parse_content_type;
    assert_eq!(
        parse_content_type("multipart/form-data; boundary=abc"),
        (Some("multipart/form-data".into()), Some("abc".into()))
    );
    assert_eq!(
        parse_content_type("multipart/form-data; boundary=\"abc\""),
        (Some("multipart/form-data".into()), Some("\"abc\"".into()))
    );
    assert_eq!(
        parse_content_type("multipart/form-data,boundary = abc "),
        (Some("multipart/form-data".into()), Some("abc".into()))
    );
    assert_eq!(
        parse_content_type("multipart/form-data"),
        (Some("multipart/form-data".into()), None)
    );
}
