//! Tests that need an optional service (PostgreSQL, a KMS server, an S3 server, Redis) are
//! compiled as ignored when its variable is unset, and those that need a tool (`promtool`,
//! PostgreSQL's `pg_dump`) when it is not on the PATH, so a run without them reports them
//! skipped, never passed.

fn main() {
    for (variable, cfg) in [
        ("ALIAS_TEST_POSTGRES_URL", "alias_test_postgres"),
        ("ALIAS_TEST_KMS_ENDPOINT", "alias_test_kms"),
        ("ALIAS_TEST_S3_ENDPOINT", "alias_test_s3"),
        ("ALIAS_TEST_REDIS_URL", "alias_test_redis"),
    ] {
        println!("cargo::rustc-check-cfg=cfg({cfg})");
        println!("cargo::rerun-if-env-changed={variable}");
        if std::env::var(variable).is_ok_and(|value| !value.is_empty()) {
            println!("cargo::rustc-cfg={cfg}");
        }
    }
    println!("cargo::rerun-if-env-changed=PATH");
    for (tool, cfg) in [
        ("promtool", "alias_test_promtool"),
        ("pg_dump", "alias_test_pg_dump"),
        ("systemd-analyze", "alias_test_systemd_analyze"),
    ] {
        println!("cargo::rustc-check-cfg=cfg({cfg})");
        if on_path(tool) {
            println!("cargo::rustc-cfg={cfg}");
        }
    }
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
}
