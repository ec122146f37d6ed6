//! Access control end to end: a token-protected process refuses every RPC
//! (run control and data) without the token and changes nothing; a
//! non-loopback bind without a token refuses to start; TLS with test
//! certificates; a whole demo run with token and TLS loses nothing.

use daq_runtime::auth::AccessArgs;
use daq_tests::{
    TestPki, bin_dir, daqctl_ok, fragment_batch, latest_run, runtime, send_fragments, spawn_cmd,
    status, summary, token_and_wrong, write_token,
};
use proto::run_control_client::RunControlClient;
use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;
use tonic::Code;

/// `binary --rank 0 --listen 127.0.0.1:0 <args>`, stderr into `log`.
fn start(binary: &str, args: &[&OsStr], log: &Path) -> daq_tests::Spawned {
    let mut cmd = Command::new(bin_dir().join(binary));
    cmd.args(["--rank", "0", "--listen", "127.0.0.1:0"])
        .args(args)
        .env_remove("DAQ_TOKEN_FILE")
        .stderr(Stdio::from(std::fs::File::create(log).expect("log")));
    spawn_cmd(cmd, binary).expect("starts")
}

async fn client(addr: &str, access: &AccessArgs) -> RunControlClient<daq_runtime::net::Channel> {
    let creds = access.load().expect("credentials");
    let ch = daq_runtime::net::connect_with(addr, Duration::from_secs(10), &creds)
        .await
        .expect("connects");
    RunControlClient::new(ch)
}

#[test]
fn rpcs_without_the_right_token_are_unauthenticated_and_change_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (token, wrong) = token_and_wrong(dir.path());
    let log = dir.path().join("eventbuilder.log");
    let p = start(
        "eventbuilder",
        &["--token-file".as_ref(), token.as_os_str()],
        &log,
    );
    runtime().block_on(async {
        let right = AccessArgs {
            token_file: Some(token.clone()),
            ..AccessArgs::default()
        };
        let bad = AccessArgs {
            token_file: Some(wrong.clone()),
            ..AccessArgs::default()
        };
        for (access, reason) in [(AccessArgs::default(), "no token"), (bad, "wrong token")] {
            let mut c = client(&p.addr, &access).await;
            let e = c.status(proto::Empty {}).await.expect_err("refused");
            assert_eq!(e.code(), Code::Unauthenticated, "{e}");
            assert!(e.message().starts_with(reason), "{}", e.message());
            let e = c
                .init(proto::InitRequest {
                    config_toml: String::new(),
                    destinations: vec![],
                })
                .await
                .expect_err("refused");
            assert_eq!(e.code(), Code::Unauthenticated, "{e}");
            let e = c.shutdown(proto::Empty {}).await.expect_err("refused");
            assert_eq!(e.code(), Code::Unauthenticated, "{e}");
            // The data path too: a fragment stream is refused before any
            // fragment is looked at.
            let creds = access.load().expect("credentials");
            let ch = daq_runtime::net::connect_with(&p.addr, Duration::from_secs(10), &creds)
                .await
                .expect("connects");
            let one = vec![daq_tests::data_fragment(1, 0, 16)];
            let e = send_fragments(&ch, vec![fragment_batch(0, 1, one)])
                .await
                .expect_err("refused");
            assert_eq!(e.code(), Code::Unauthenticated, "{e}");
        }
        // Nothing changed: still booted, nothing received, and the process
        // still answers the right token.
        let mut c = client(&p.addr, &right).await;
        let st = status(&mut c).await;
        assert_eq!(st.state, "booted");
        let counters = st.counters.expect("counters");
        assert_eq!(counters.fragments_received, 0);
        assert_eq!(counters.events_built, 0);
        c.shutdown(proto::Empty {}).await.expect("shutdown");
    });
    let mut p = p;
    let status = p.child.wait().expect("exits");
    assert!(status.success(), "{status}");
    // Every refused attempt is logged with the peer address: 4 RPCs for
    // each of the 2 bad clients.
    let text = std::fs::read_to_string(&log).expect("log");
    let refused: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("rpc refused: unauthenticated"))
        .collect();
    assert_eq!(refused.len(), 8, "{text}");
    assert!(
        refused.iter().all(|l| l.contains("peer=127.0.0.1:")),
        "{text}"
    );
    assert_eq!(
        refused
            .iter()
            .filter(|l| l.contains("/daq.v1.FragmentSink/Send"))
            .count(),
        2,
        "{text}"
    );
    assert!(!text.contains(std::fs::read_to_string(&token).expect("token").trim()));
}

#[test]
fn non_loopback_bind_without_a_token_refuses_to_start() {
    // `binary args...` with `token` for DAQ_TOKEN_FILE: it must exit 1.
    let refused = |binary: &str, args: &[&str], token: Option<&str>| -> (Output, String) {
        let mut cmd = Command::new(bin_dir().join(binary));
        match token {
            Some(t) => cmd.env("DAQ_TOKEN_FILE", t),
            None => cmd.env_remove("DAQ_TOKEN_FILE"),
        };
        let out = cmd.args(args).stdin(Stdio::null()).output().expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "{binary}: {stderr}");
        (out, stderr)
    };
    for binary in ["boardreader", "eventbuilder", "aggregator"] {
        let (out, stderr) = refused(binary, &["--rank", "0", "--listen", "0.0.0.0:0"], None);
        assert!(
            stderr.contains(
                "refusing to listen on 0.0.0.0:0 without a token: a non-loopback address \
                 needs --token-file FILE or DAQ_TOKEN_FILE (loopback needs none)"
            ),
            "{binary}: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{binary} printed a readiness line");
    }
    // A token file that does not exist is an error too, naming the file.
    let (_, stderr) = refused(
        "boardreader",
        &["--listen", "127.0.0.1:0"],
        Some("/nonexistent/daq-token"),
    );
    assert!(
        stderr.contains("cannot read token file /nonexistent/daq-token"),
        "{stderr}"
    );
}

#[test]
fn tls_with_a_token_serves_only_clients_that_trust_its_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = TestPki::new(dir.path(), &["127.0.0.1", "localhost"]).expect("pki");
    let other = tempfile::tempdir().expect("tempdir");
    let other_pki = TestPki::new(other.path(), &["127.0.0.1"]).expect("pki");
    let token = write_token(dir.path(), "token").expect("token");
    let log = dir.path().join("aggregator.log");
    let p = start(
        "aggregator",
        &[
            "--token-file".as_ref(),
            token.as_os_str(),
            "--tls-cert".as_ref(),
            pki.cert.as_os_str(),
            "--tls-key".as_ref(),
            pki.key.as_os_str(),
        ],
        &log,
    );
    runtime().block_on(async {
        let trusted = AccessArgs {
            token_file: Some(token.clone()),
            tls_ca: Some(pki.ca.clone()),
            ..AccessArgs::default()
        };
        let mut c = client(&p.addr, &trusted).await;
        let st = status(&mut c).await;
        assert_eq!(st.state, "booted");
        assert_eq!(st.process, "aggregator-0");
        // A client trusting another CA cannot even connect.
        let untrusted = AccessArgs {
            token_file: Some(token.clone()),
            tls_ca: Some(other_pki.ca.clone()),
            ..AccessArgs::default()
        };
        let creds = untrusted.load().expect("credentials");
        let r = daq_runtime::net::connect_with(&p.addr, Duration::from_millis(500), &creds).await;
        assert!(r.is_err(), "a client trusting another CA connected");
        // Plaintext gets nowhere either.
        let plain = AccessArgs {
            token_file: Some(token.clone()),
            ..AccessArgs::default()
        };
        let creds = plain.load().expect("credentials");
        match daq_runtime::net::connect_with(&p.addr, Duration::from_millis(500), &creds).await {
            Err(_) => {}
            Ok(ch) => {
                let e = RunControlClient::new(ch)
                    .status(proto::Empty {})
                    .await
                    .expect_err("plaintext refused");
                assert_ne!(e.code(), Code::Ok);
            }
        }
        // TLS without the token is still refused.
        let no_token = AccessArgs {
            tls_ca: Some(pki.ca.clone()),
            ..AccessArgs::default()
        };
        let e = client(&p.addr, &no_token)
            .await
            .status(proto::Empty {})
            .await
            .expect_err("refused");
        assert_eq!(e.code(), Code::Unauthenticated);
        c.shutdown(proto::Empty {}).await.expect("shutdown");
    });
}

#[test]
fn demo_with_token_and_tls_moves_every_event_through_authenticated_streams() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = TestPki::new(dir.path(), &["127.0.0.1"]).expect("pki");
    let token = write_token(dir.path(), "token").expect("token");
    let runs = dir.path().join("runs");
    let stdout = daqctl_ok(&[
        "--token-file",
        token.to_str().expect("utf-8"),
        "--tls-cert",
        pki.cert.to_str().expect("utf-8"),
        "--tls-key",
        pki.key.to_str().expect("utf-8"),
        "--tls-ca",
        pki.ca.to_str().expect("utf-8"),
        "demo",
        "--events",
        "200",
        "--throttle-us",
        "0",
        "--run-dir",
        runs.to_str().expect("utf-8"),
    ]);
    assert!(stdout.contains("OK: nothing lost"), "{stdout}");
    let root = latest_run(&runs);
    let s = summary(&root).expect("summary");
    assert_eq!(s["events_built"], 200, "{s}");
    assert_eq!(s["events_written"], 200, "{s}");
    assert_eq!(s["fragments_sent"], 400, "{s}");
    assert_eq!(s["fragments_received"], 400, "{s}");
    // No process refused anything: every hop carried the token.
    for entry in std::fs::read_dir(root.join("logs")).expect("logs") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("log");
        assert!(!text.contains("rpc refused"), "{}: {text}", path.display());
    }
}
