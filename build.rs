//! Tests that need an optional service (PostgreSQL, a KMS server, an S3 server, Redis) are
//! compiled as ignored when its variable is unset, so a run without the service reports them
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
}
