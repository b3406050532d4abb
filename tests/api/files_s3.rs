//! The file suite again on S3-compatible storage: a real, signature-checking server
//! (SeaweedFS, started by `.ci/run`) at `ALIAS_TEST_S3_ENDPOINT`, bucket
//! `ALIAS_TEST_S3_BUCKET` (default `alias-test`), credentials from the `AWS_*` variables.
//! Without the variable (when the tests were built) these are reported ignored.

use alias_server::config::StorageLocation;

use crate::helpers::{DbKind, TestApp};

async fn on_s3(db_kind: DbKind) -> TestApp {
    let endpoint = std::env::var("ALIAS_TEST_S3_ENDPOINT").unwrap_or_default();
    let bucket = std::env::var("ALIAS_TEST_S3_BUCKET").unwrap_or_else(|_| "alias-test".to_owned());
    // Each test its own prefix: the sweep lists only its own objects.
    let prefix = format!("test-{}", uuid::Uuid::new_v4());
    TestApp::spawn_with(db_kind, move |config| {
        config.storage.location = StorageLocation::S3 {
            bucket,
            prefix,
            endpoint: Some(endpoint),
            virtual_hosted_style: false,
        };
    })
    .await
}

macro_rules! on_s3 {
    ($($test:ident = $body:path;)*) => {
        $(
            mod $test {
                #[tokio::test]
                #[cfg_attr(not(alias_test_s3), ignore = "ALIAS_TEST_S3_ENDPOINT is not set")]
                async fn sqlite() {
                    $body(super::on_s3($crate::helpers::DbKind::Sqlite).await).await;
                }

                #[tokio::test]
                #[cfg_attr(
                    not(all(alias_test_s3, alias_test_postgres)),
                    ignore = "ALIAS_TEST_S3_ENDPOINT or ALIAS_TEST_POSTGRES_URL is not set"
                )]
                async fn postgres() {
                    $body(super::on_s3($crate::helpers::DbKind::Postgres).await).await;
                }
            }
        )*
    };
}

on_s3! {
    form_upload_on_s3 = crate::files::form_upload_is_sniffed_stored_and_served;
    upload_links_on_s3 = crate::files::upload_links_take_exactly_the_declared_bytes;
    files_listed_and_deleted_on_s3 = crate::files::files_are_private_listed_and_deleted;
    images_on_s3 = crate::files_images::images_are_oriented_stripped_and_thumbnailed;
    avatars_on_s3 = crate::files_images::avatars_are_uploaded_files_with_stable_links;
    sweep_on_s3 = crate::files_images::the_sweep_removes_abandoned_uploads_and_orphans;
}
