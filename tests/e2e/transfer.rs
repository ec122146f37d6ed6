//! `[transfer] mode` on one host: `auto` decides from what the pair can
//! do, never from addresses. A receiver that cannot map the sender's
//! segment (here: an eventbuilder in its own mount namespace with a private
//! tmpfs on /dev/shm, as two pods on one node may be) makes `auto` stream
//! over gRPC, saying so in the sender's log, and makes `shm` refuse at
//! start with a clear error; the same pair with a shared /dev/shm uses
//! shared memory. Needs root for `unshare -m` (CI runs as root); elsewhere
//! the test is skipped, saying so, and fails when `CI` is set.

use daq_format::config::{SystemConfig, TransferMode};
use daq_tests::{Spawned, bin_dir, control, init_and_start, runtime, spawn_cmd, start_request};
use std::process::{Command, Stdio};

/// `binary --rank 0 --listen 127.0.0.1:0`, in a mount namespace of its own
/// with a private /dev/shm when `private_shm`.
fn spawn(binary: &str, private_shm: bool, log: &std::path::Path) -> Spawned {
    let bin = bin_dir().join(binary);
    let mut cmd = if private_shm {
        let mut c = Command::new("unshare");
        c.args(["-m", "--propagation", "private", "sh", "-c"])
            .arg("mount -t tmpfs -o size=64m,mode=1777 tmpfs /dev/shm && exec \"$0\" \"$@\"")
            .arg(&bin);
        c
    } else {
        Command::new(&bin)
    };
    cmd.args(["--rank", "0", "--listen", "127.0.0.1:0"])
        .stderr(Stdio::from(std::fs::File::create(log).expect("log file")));
    spawn_cmd(cmd, binary).unwrap_or_else(|e| panic!("{binary}: {e:#}"))
}

fn can_unshare() -> bool {
    let ok = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg("mount -t tmpfs tmpfs /dev/shm")
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but `unshare -m` with a tmpfs mount fails (needs root)"
        );
        eprintln!("skipped: `unshare -m` with a tmpfs mount fails here (needs root)");
    }
    ok
}

fn config(mode: TransferMode) -> SystemConfig {
    let mut c = daq_tests::test_config(1, 0);
    c.topology.boardreaders = 1;
    c.transfer.mode = mode;
    c.generator.throttle_us = 1_000;
    c
}

/// A boardreader and an eventbuilder (1x1); the eventbuilder's /dev/shm is
/// its own when `private_shm`. Returns the boardreader's start result and,
/// when it started, its links after the run and what arrived.
fn pair(
    mode: TransferMode,
    private_shm: bool,
) -> (Result<(), tonic::Status>, Vec<String>, u64, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let eb = spawn("eventbuilder", private_shm, &dir.path().join("eb.log"));
    let br = spawn("boardreader", false, &dir.path().join("br.log"));
    let c = config(mode);
    let rt = runtime();
    let (started, links, received) = rt.block_on(async {
        let mut ebc = control(&eb.addr).await;
        init_and_start(&mut ebc, &c, 1, dir.path()).await;
        let mut brc = control(&br.addr).await;
        brc.init(proto::InitRequest {
            config_toml: c.to_toml(),
            destinations: vec![eb.addr.clone()],
        })
        .await
        .expect("init");
        let started = brc.start(start_request(1, dir.path())).await.map(|_| ());
        if started.is_err() {
            return (started, vec![], 0);
        }
        daq_tests::wait_for_status(&mut ebc, "fragments arriving", |s| {
            s.counters
                .as_ref()
                .is_some_and(|c| c.fragments_received >= 20)
        })
        .await;
        let links = daq_tests::status(&mut brc).await.links;
        daq_tests::stop(&mut brc).await;
        let reply = daq_tests::stop(&mut ebc).await;
        assert!(reply.problems.is_empty(), "{:?}", reply.problems);
        let st = daq_tests::status(&mut ebc).await;
        let c = st.counters.unwrap_or_default();
        let sent = daq_tests::status(&mut brc)
            .await
            .counters
            .unwrap_or_default()
            .fragments_sent;
        assert_eq!(c.fragments_received, sent, "every fragment sent arrived");
        (started, links, c.fragments_received)
    });
    drop((br, eb));
    let log = std::fs::read_to_string(dir.path().join("br.log")).unwrap_or_default();
    (started, links, received, log)
}

#[test]
fn auto_streams_over_grpc_where_the_receiver_cannot_map_the_segment_and_shm_refuses() {
    if !can_unshare() {
        return;
    }
    let (started, links, received, log) = pair(TransferMode::Auto, true);
    started.expect("auto starts whatever the pair can share");
    assert_eq!(links, vec!["eventbuilder-0 grpc".to_string()]);
    assert!(received >= 20);
    assert!(
        log.contains("shared memory is not possible; fragments go over gRPC"),
        "the fallback is logged: {log}"
    );

    let (started, _, _, _) = pair(TransferMode::Shm, true);
    let err = started.expect_err("shm refuses a pair that cannot share memory");
    assert!(
        err.message()
            .contains("transfer mode shm: eventbuilder 0 at 127.0.0.1:")
            && err.message().contains("cannot use shared memory"),
        "{}",
        err.message()
    );

    let (started, links, received, _) = pair(TransferMode::Shm, false);
    started.expect("shm starts where the pair shares /dev/shm");
    assert_eq!(links, vec!["eventbuilder-0 shm".to_string()]);
    assert!(received >= 20);
}
