//! `lxcforge upload` against the Proxmox emulator: the token (401, 403, where the secret comes
//! from), TLS (system roots, --ca-cert, --fingerprint, --insecure) and several nodes. Every
//! run asserts (in `run`) that no secret appears in stdout or stderr.

mod support;
mod upload_common;

use std::time::Duration;

use support::record_fault;
use upload_common::*;

const AREA: &str = "Uploads";

#[test]
fn a_bad_secret_gets_401_explained_without_the_secret() {
    // Proxmox's own 3 s delay for authentication failures (the other tests shorten it).
    let fx = Fixture::start(Config {
        auth_failure_delay: Duration::from_secs(3),
        ..Config::default()
    });
    let file = fx.template("a-v1.tar.gz", 2 << 20);
    let wrong = "11111111-2222-4333-8444-555555555555";
    fx.record_built(&file);
    let r = run(
        fx.cmd()
            .arg("--json")
            .arg(&file)
            .env("PM_API_TOKEN_SECRET", wrong),
        &[wrong],
    );
    record_fault(
        AREA,
        "401: a wrong token secret",
        &format!(
            "{}; {} upload request(s)",
            r.outcome_in(&fx),
            fx.uploads().len()
        ),
        &fx.left_behind("pve", "local", &file, false),
    );
    assert!(fx.ledger_uploads(&file).is_empty(), "ledger changed");
    r.assert_code(1)
        .assert_stderr("authentication failed")
        .assert_stderr("401 Authentication failed!")
        .assert_stderr("the body of a 401 is empty")
        .assert_stderr("PVEAPIToken=automation@pve!ci=<secret: 36 characters, shaped like the UUID Proxmox issues>")
        .assert_stderr("the token id from PM_API_TOKEN_ID, the secret from PM_API_TOKEN_SECRET")
        .assert_stderr("user@realm!tokenid")
        .assert_stderr("pveum user token list automation@pve");
    let j = r.json();
    assert_eq!(j["ok"], false);
    assert!(j["error"].as_str().unwrap().contains("401"), "{j}");
    assert!(fx.uploads().is_empty(), "no upload after a failed /version");
    fx.assert_nothing_stored("pve", "local", "a-v1.tar.gz");
}

#[test]
fn a_token_name_given_as_secret_is_described() {
    let fx = Fixture::start(config());
    let file = fx.template("a-v2.tar.gz", 1000);
    let r = run(fx.cmd().arg(&file).env("PM_API_TOKEN_SECRET", "ci"), &[]);
    r.assert_code(1)
        .assert_stderr("<secret: 2 characters, NOT shaped like the UUID Proxmox issues");
}

#[test]
fn a_token_without_the_upload_privilege_gets_403_explained() {
    let mut cfg = config();
    cfg.tokens.push(TokenConfig::with_privs(
        "builder@pve",
        "up",
        "00000000-0000-4000-8000-0000000000b2",
        "*",
        &["Datastore.Audit", "Datastore.AllocateSpace"],
    ));
    let fx = Fixture::start(cfg);
    let file = fx.template("p-v1.tar.gz", 64 << 10);
    fx.record_built(&file);
    let r = run(
        fx.cmd()
            .arg(&file)
            .env("PM_API_TOKEN_ID", "builder@pve!up")
            .env(
                "PM_API_TOKEN_SECRET",
                "00000000-0000-4000-8000-0000000000b2",
            ),
        &["00000000-0000-4000-8000-0000000000b2"],
    );
    record_fault(
        AREA,
        "403: the token lacks Datastore.AllocateTemplate",
        &format!(
            "{}; {} upload request(s)",
            r.outcome_in(&fx),
            fx.uploads().len()
        ),
        &fx.left_behind("pve", "local", &file, false),
    );
    assert!(fx.ledger_uploads(&file).is_empty(), "ledger changed");
    r.assert_code(1)
        .assert_stderr("permission denied to upload")
        .assert_stderr("403 Permission check failed (/storage/local, Datastore.AllocateTemplate)")
        .assert_stderr("privilege separation")
        .assert_stderr(
            "pveum acl modify /storage/local --tokens 'builder@pve!up' --roles PVEDatastoreAdmin",
        )
        .assert_stderr("--users builder@pve");
    assert_eq!(fx.uploads().len(), 1, "refused, and not sent again");
    fx.assert_nothing_stored("pve", "local", "p-v1.tar.gz");
}

#[test]
fn a_large_upload_refused_early_is_a_cut_that_names_the_privilege() {
    // Proxmox (and the emulator) drop a large refused upload without answering (ref §11).
    let mut cfg = config();
    cfg.tokens.push(TokenConfig::with_privs(
        "builder@pve",
        "up",
        "00000000-0000-4000-8000-0000000000b3",
        "*",
        &["Datastore.Audit"],
    ));
    let fx = Fixture::start(cfg);
    let file = fx.template("p-v2.tar.gz", 48 << 20);
    fx.record_built(&file);
    let r = run(
        fx.cmd()
            .args(["--retries", "1"])
            .arg(&file)
            .env("PM_API_TOKEN_ID", "builder@pve!up")
            .env(
                "PM_API_TOKEN_SECRET",
                "00000000-0000-4000-8000-0000000000b3",
            ),
        &["00000000-0000-4000-8000-0000000000b3"],
    );
    record_fault(
        AREA,
        "403 on a 48 MiB upload (Proxmox closes the connection early, no answer)",
        &format!(
            "{}; {} upload request(s)",
            r.outcome_in(&fx),
            fx.uploads().len()
        ),
        &fx.left_behind("pve", "local", &file, false),
    );
    assert!(fx.ledger_uploads(&file).is_empty(), "ledger changed");
    r.assert_code(1)
        .assert_stderr("was cut while uploading")
        .assert_stderr("Datastore.AllocateTemplate on /storage/local");
    fx.assert_nothing_stored("pve", "local", "p-v2.tar.gz");
}

#[test]
fn a_token_that_cannot_see_the_storage_is_told_why() {
    let mut cfg = config();
    cfg.tokens.push(TokenConfig::with_privs(
        "builder@pve",
        "up",
        "00000000-0000-4000-8000-0000000000b4",
        "*",
        &["Datastore.AllocateTemplate"],
    ));
    let fx = Fixture::start(cfg);
    let file = fx.template("p-v3.tar.gz", 1000);
    let r = run(
        fx.cmd()
            .arg(&file)
            .env("PM_API_TOKEN_ID", "builder@pve!up")
            .env(
                "PM_API_TOKEN_SECRET",
                "00000000-0000-4000-8000-0000000000b4",
            ),
        &["00000000-0000-4000-8000-0000000000b4"],
    );
    r.assert_code(1)
        .assert_stderr("cannot see it")
        .assert_stderr("Datastore.Audit on /storage/local");
    assert!(fx.uploads().is_empty());
}

#[test]
fn the_secret_from_a_file_and_the_bpg_names() {
    let fx = Fixture::start(config());
    let file = fx.template("s-v1.tar.gz", 300 << 10);
    let secret_file = fx.dir.path().join("token-secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let r = run(
        fx.cmd()
            .env_remove("PM_API_TOKEN_SECRET")
            .arg("--token-secret-file")
            .arg(&secret_file)
            .arg(&file),
        &[],
    );
    r.assert_code(0);
    assert!(!r.stderr.contains("readable by every user"), "{}", r.stderr);
    fx.assert_stored_identical("pve", "local", &file);

    // Terraform bpg provider's names only.
    let file = fx.template("s-v2.tar.gz", 300 << 10);
    let r = run(
        fx.cmd()
            .env_remove("PM_API_URL")
            .env_remove("PM_API_TOKEN_ID")
            .env_remove("PM_API_TOKEN_SECRET")
            .env("PROXMOX_VE_ENDPOINT", format!("{}/", fx.emu.base_url()))
            .env("PROXMOX_VE_API_TOKEN", format!("{TOKEN_ID}={SECRET}"))
            .arg(&file),
        &[],
    );
    r.assert_code(0);
    fx.assert_stored_identical("pve", "local", &file);
}

#[test]
fn the_system_roots_refuse_the_node_and_print_its_fingerprint() {
    let fx = Fixture::start(config());
    let file = fx.template("tls-v1.tar.gz", 1000);
    fx.record_built(&file);
    let r = run(fx.cmd().env_remove("PM_TLS_CA_CERT").arg(&file), &[]);
    let fp = fx.emu.fingerprint_sha256();
    record_fault(
        AREA,
        "TLS: a certificate the system roots do not trust",
        &format!(
            "{}; {} request(s) reached the node",
            r.outcome_in(&fx),
            fx.emu.requests().len()
        ),
        &fx.left_behind("pve", "local", &file, false),
    );
    assert!(fx.ledger_uploads(&file).is_empty(), "ledger changed");
    r.assert_code(1)
        .assert_stderr("TLS: the certificate of 127.0.0.1:")
        .assert_stderr("signed by a CA this machine does not trust")
        .assert_stderr(&format!("SHA-256 fingerprint {fp}"))
        .assert_stderr(&format!("--fingerprint {fp}"))
        .assert_stderr("--ca-cert");
    assert!(
        fx.emu.requests().is_empty(),
        "no request (so no token) may pass a failed handshake"
    );
}

#[test]
fn the_ca_cert_flag_trusts_the_node() {
    let fx = Fixture::start(config());
    let file = fx.template("tls-v2.tar.gz", 100 << 10);
    let r = run(
        fx.cmd()
            .env_remove("PM_TLS_CA_CERT")
            .arg("--ca-cert")
            .arg(&fx.ca_file)
            .arg(&file),
        &[],
    );
    r.assert_code(0);
    fx.assert_stored_identical("pve", "local", &file);

    // Another CA: refused, with the fingerprint to check.
    let other = Fixture::start(config());
    let file = fx.template("tls-v3.tar.gz", 1000);
    fx.record_built(&file);
    let before = fx.emu.requests().len();
    let r = run(
        fx.cmd()
            .env_remove("PM_TLS_CA_CERT")
            .arg("--ca-cert")
            .arg(&other.ca_file)
            .arg(&file),
        &[],
    );
    record_fault(
        AREA,
        "TLS: --ca-cert names another CA",
        &format!(
            "{}; {} request(s) reached the node",
            r.outcome_in(&fx),
            fx.emu.requests().len() - before
        ),
        &fx.left_behind("pve", "local", &file, false),
    );
    assert!(fx.ledger_uploads(&file).is_empty(), "ledger changed");
    assert_eq!(fx.emu.requests().len(), before, "the token was not sent");
    r.assert_code(1)
        .assert_stderr("not accepted")
        .assert_stderr(&fx.emu.fingerprint_sha256());
}

#[test]
fn a_pinned_fingerprint_is_accepted_and_a_wrong_one_refused() {
    let fx = Fixture::start(config());
    let file = fx.template("pin-v1.tar.gz", 100 << 10);
    let fp = fx.emu.fingerprint_sha256();
    let r = run(
        fx.cmd()
            .env_remove("PM_TLS_CA_CERT")
            .args(["--fingerprint", &fp.to_lowercase()])
            .arg(&file),
        &[],
    );
    r.assert_code(0);
    fx.assert_stored_identical("pve", "local", &file);

    let wrong = format!(
        "{}{}",
        if fp.starts_with('A') { "B" } else { "A" },
        &fp[1..]
    );
    let file = fx.template("pin-v2.tar.gz", 1000);
    fx.record_built(&file);
    let before = fx.emu.requests().len();
    let r = run(
        fx.cmd()
            .env_remove("PM_TLS_CA_CERT")
            .env("PM_TLS_FINGERPRINT", &wrong)
            .arg(&file),
        &[],
    );
    record_fault(
        AREA,
        "TLS: a wrong pinned fingerprint (PM_TLS_FINGERPRINT)",
        &format!(
            "{}; {} request(s) reached the node",
            r.outcome_in(&fx),
            fx.emu.requests().len() - before
        ),
        &fx.left_behind("pve", "local", &file, false),
    );
    assert!(fx.ledger_uploads(&file).is_empty(), "ledger changed");
    r.assert_code(1)
        .assert_stderr(&format!("fingerprint is {fp}, not the pinned {wrong}"))
        .assert_stderr("not the machine you pinned");
    assert_eq!(fx.emu.requests().len(), before, "the token was not sent");
    fx.assert_nothing_stored("pve", "local", "pin-v2.tar.gz");
}

#[test]
fn insecure_works_only_when_asked_and_warns() {
    let fx = Fixture::start(config());
    let file = fx.template("ins-v1.tar.gz", 100 << 10);
    let r = run(
        fx.cmd()
            .env_remove("PM_TLS_CA_CERT")
            .arg("--insecure")
            .arg(&file),
        &[],
    );
    r.assert_code(0)
        .assert_stderr("warning: --insecure: the certificate of 127.0.0.1 is not checked");
    fx.assert_stored_identical("pve", "local", &file);
}

#[test]
fn several_nodes_are_uploaded_in_parallel() {
    let mut cfg = config();
    cfg.nodes = vec!["pve".into(), "pve2".into(), "pve3".into()];
    cfg.task_duration = Duration::from_millis(800);
    let fx = Fixture::start(cfg);
    let file = fx.template("multi-v1.tar.gz", 2 << 20);
    let r = run(
        fx.cmd()
            .args(["--json", "--node", "pve,pve2,pve3"])
            .arg(&file),
        &[],
    );
    r.assert_code(0);
    let j = r.json();
    let mut nodes: Vec<&str> = j["uploads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["node"].as_str().unwrap())
        .collect();
    nodes.sort();
    assert_eq!(nodes, ["pve", "pve2", "pve3"]);
    for n in ["pve", "pve2", "pve3"] {
        fx.assert_stored_identical(n, "local", &file);
    }
    // Every task ran on the node that received the requests, and was followed there.
    let tasks = fx.emu.tasks();
    assert_eq!(tasks.len(), 3);
    assert!(
        tasks
            .iter()
            .all(|t| t.node == "pve" && t.exitstatus.as_deref() == Some("OK"))
    );
    // In parallel: all three uploads were under way before any task was polled.
    let reqs = fx.emu.requests();
    let last_post = reqs.iter().rposition(|r| r.method == "POST").unwrap();
    let first_poll = reqs
        .iter()
        .position(|r| r.path.ends_with("/status"))
        .unwrap();
    assert!(last_post < first_poll, "uploads ran one after another");
}

#[test]
fn a_shared_storage_is_uploaded_once() {
    let mut cfg = config();
    cfg.nodes = vec!["pve".into(), "pve2".into()];
    cfg.storages.push(StorageConfig {
        id: "pve-nfs".into(),
        kind: "nfs".into(),
        content: vec!["vztmpl".into(), "iso".into()],
        shared: true,
        enabled: true,
        nodes: None,
        total: 0,
    });
    let fx = Fixture::start(cfg);
    let file = fx.template("shared-v1.tar.gz", 1 << 20);
    let r = run(
        fx.cmd()
            .args(["--json", "--node", "pve,pve2", "--storage", "pve-nfs"])
            .arg(&file),
        &[],
    );
    r.assert_code(0)
        .assert_stderr("is shared: one upload serves every node");
    let j = r.json();
    assert_eq!(j["uploads"].as_array().unwrap().len(), 1, "{j}");
    assert_eq!(j["uploads"][0]["shared"], true);
    assert_eq!(j["uploads"][0]["volid"], "pve-nfs:vztmpl/shared-v1.tar.gz");
    assert_eq!(fx.uploads().len(), 1);
    fx.assert_stored_identical("pve", "pve-nfs", &file);
    fx.assert_stored_identical("pve2", "pve-nfs", &file);
}

#[test]
fn one_bad_node_stops_all_before_any_upload() {
    let mut cfg = config();
    cfg.nodes = vec!["pve".into(), "pve2".into()];
    let fx = Fixture::start(cfg);
    let file = fx.template("m-v2.tar.gz", 1000);
    fx.emu.put_file("pve2", "local", "m-v2.tar.gz", b"old");
    fx.record_built(&file);
    let r = run(
        fx.cmd().args(["--json", "--node", "pve,pve2"]).arg(&file),
        &[],
    );
    record_fault(
        AREA,
        "an existing volid on one of two nodes",
        &format!(
            "{}; {} upload request(s); pve2's file {}",
            r.outcome_in(&fx),
            fx.uploads().len(),
            if fx.stored("pve2", "local", "m-v2.tar.gz").as_deref() == Some(b"old") {
                "unchanged"
            } else {
                "CHANGED"
            }
        ),
        &format!(
            "on pve: {} (+ the old file on pve2, by design)",
            fx.left_behind("pve", "local", &file, false)
        ),
    );
    assert!(fx.ledger_uploads(&file).is_empty(), "ledger changed");
    r.assert_code(1)
        .assert_stderr("already exists on node 'pve2'");
    let j = r.json();
    assert_eq!(j["failed"][0]["node"], "pve2");
    assert!(fx.uploads().is_empty(), "nothing uploaded anywhere");
    assert!(fx.emu.stored_file("pve", "local", "m-v2.tar.gz").is_none());
}

#[test]
fn a_node_failing_after_others_succeeded_is_named_with_the_ones_verified() {
    let mut cfg = config();
    cfg.nodes = vec!["pve".into(), "pve2".into()];
    let fx = Fixture::start(cfg);
    let file = fx.template("part-v1.tar.gz", 1 << 20);
    fx.emu
        .inject(Fault::TaskFails("import failed: injected".into()));
    fx.record_built(&file);
    let r = run(
        fx.cmd().args(["--json", "--node", "pve,pve2"]).arg(&file),
        &[],
    );
    r.assert_code(1)
        .assert_stderr("the upload failed on 1 of 2 node(s); the template is verified on: ")
        .assert_stderr("import failed: injected");
    let j = r.json();
    assert_eq!(j["ok"], false);
    let ok_node = j["uploads"][0]["node"].as_str().unwrap().to_owned();
    let bad_node = j["failed"][0]["node"].as_str().unwrap().to_owned();
    let recorded: Vec<String> = fx
        .ledger_uploads(&file)
        .iter()
        .map(|u| u.node.clone())
        .collect();
    record_fault(
        AREA,
        "the task fails on one of two nodes",
        &format!(
            "{}; verified on {ok_node}, failed on {bad_node}",
            r.outcome_in(&fx)
        ),
        &format!(
            "on {bad_node}: {}; on {ok_node}: {}; ledger upload records for: {recorded:?}",
            fx.left_behind(&bad_node, "local", &file, false),
            if fx.stored(&ok_node, "local", "part-v1.tar.gz").is_some() {
                "the template, as intended"
            } else {
                "MISSING"
            }
        ),
    );
    // The verified node is in the ledger (so the next upload is not refused blind), the
    // failed one is not.
    assert_eq!(
        recorded,
        std::slice::from_ref(&ok_node),
        "ledger records the verified node only"
    );
    assert_ne!(ok_node, bad_node);
    assert_eq!(j["uploads"].as_array().unwrap().len(), 1);
    fx.assert_stored_identical(&ok_node, "local", &file);
    assert!(
        fx.emu
            .stored_file(&bad_node, "local", "part-v1.tar.gz")
            .is_none()
    );
}

#[test]
fn an_unknown_node_is_named() {
    let fx = Fixture::start(config());
    let file = fx.template("n-v1.tar.gz", 1000);
    let r = run(fx.cmd().args(["--node", "pve,nosuchnode"]).arg(&file), &[]);
    r.assert_code(1)
        .assert_stderr("node 'nosuchnode' is not known to the cluster")
        .assert_stderr("hostname lookup 'nosuchnode' failed");
    assert!(fx.uploads().is_empty());
}
