//! Attacks on the farm's trust boundaries, through real processes: what a
//! requester, a worker or a package can make the farm run or publish. Each
//! must get nowhere, with a reason that says why.

use kiln_core::BuildState;
use kiln_testing::{request, Farm, ONE_WORKER};
use std::time::Duration;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

/// A property value is data: shell syntax in it is printed, never run.
#[tokio::test(flavor = "multi_thread")]
async fn property_values_never_run_as_shell() {
    let config = ONE_WORKER.to_string()
        + r#"
[[component]]
name = "echoer"
steps = [ { name = "say", run = "echo got: %(prop:note)s; echo plain: %(prop:other:-none)s" } ]
"#;
    let farm = Farm::running(KILN.as_ref(), &config, &[], "w1", &["t"], 1).await;
    let marker = farm.path("pwned");
    let hostile = format!("x; touch {0}; echo $(touch {0}) `touch {0}` '\"", marker.display());
    let client = farm.client();
    let id = client.create_builds(&request(&["echoer"], &[("note", &hostile)])).await.expect("create").builds[0].id;
    let b = farm.wait_finished(id, Duration::from_secs(30)).await;
    assert_eq!(b.state, BuildState::Succeeded, "{b:?}");
    let log = client.log(id, "say", 0).await.expect("log").data;
    assert!(log.contains(&format!("got: {hostile}\n")), "the value is printed as it is: {log:?}");
    assert!(log.contains("plain: none\n"), "{log:?}");
    assert!(!marker.exists(), "the property's shell syntax ran");
}
