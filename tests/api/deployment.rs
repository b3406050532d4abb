//! The deployment files: the systemd unit passes `systemd-analyze verify`.

use std::process::Command;

/// Verified as installed, except that `ExecStart` names this build's binary (the unit's
/// `/usr/local/bin/alias-server` exists only once installed, and verify checks it).
#[test]
#[cfg_attr(
    not(alias_test_systemd_analyze),
    ignore = "systemd-analyze is not on the PATH"
)]
fn the_systemd_unit_verifies() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/alias-server.service"
    ))
    .expect("deploy/alias-server.service");
    assert!(unit.contains("ExecStart=/usr/local/bin/alias-server serve"));
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("alias-server.service");
    let built = unit.replace(
        "/usr/local/bin/alias-server",
        env!("CARGO_BIN_EXE_alias-server"),
    );
    std::fs::write(&path, built).expect("write the unit");
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("run systemd-analyze");
    assert!(
        output.status.success() && output.stderr.is_empty(),
        "systemd-analyze verify: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
