//! The live daemon's introspection equals the shipped interface XML
//! (`dbus-interfaces/org.hostd.Host1.xml`), for the manager and job objects.
//! `HOSTD_WRITE_XML=1` regenerates the file from the live daemon instead.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use hostd_tests::fixture::ImageBuilder;
use hostd_tests::machine::TestMachine;
use hostd_tests::repo_root;
use hostd_tests::sysroot::TestSysroot;
use zbus::fdo::IntrospectableProxy;

/// The `<interface name="NAME">…</interface>` element of an introspection document.
fn interface_element(xml: &str, name: &str) -> String {
    let start = xml.find(&format!("<interface name=\"{name}\">")).unwrap_or_else(|| panic!("{name} missing:\n{xml}"));
    let end = xml[start..].find("</interface>").expect("closed") + start + "</interface>".len();
    xml[start..end].to_string()
}

fn normalize(xml: &str) -> Vec<String> {
    xml.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect()
}

async fn introspect(conn: &zbus::Connection, path: &str) -> String {
    IntrospectableProxy::builder(conn)
        .destination("org.hostd.Host1")
        .path(path.to_string())
        .build()
        .await
        .unwrap()
        .introspect()
        .await
        .unwrap()
}

#[tokio::test]
async fn live_introspection_equals_the_interface_xml() {
    let sysroot = TestSysroot::new("256m").unwrap();
    let builder = ImageBuilder::new(&sysroot.dir.path().join("images")).unwrap();
    let v1 = builder.build("v1", &[], &BTreeMap::new()).await.unwrap();
    sysroot.deploy_image(&v1.reference).await.unwrap();
    let machine = TestMachine::start(sysroot.path(), "").unwrap();
    let (conn, host) = machine.manager().await.unwrap();
    let manager = interface_element(&introspect(&conn, "/org/hostd/Host1").await, "org.hostd.Host1");
    // A job object exists while a job runs and for a while after it ended.
    let job_path = host.check(HashMap::new()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let job = interface_element(&introspect(&conn, job_path.as_str()).await, "org.hostd.Host1.Job");

    let file = repo_root().join("dbus-interfaces/org.hostd.Host1.xml");
    if std::env::var_os("HOSTD_WRITE_XML").is_some() {
        let doc = format!(
            "<!DOCTYPE node PUBLIC \"-//freedesktop//DTD D-BUS Object Introspection 1.0//EN\"\n \"http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd\">\n<!-- org.hostd.Host1: see docs/dbus-api.md. Generated from the live daemon; a test keeps it equal. -->\n<node>\n  {manager}\n  {job}\n</node>\n"
        );
        std::fs::write(&file, doc).unwrap();
    }
    let shipped = std::fs::read_to_string(&file).unwrap();
    assert_eq!(normalize(&interface_element(&shipped, "org.hostd.Host1")), normalize(&manager));
    assert_eq!(normalize(&interface_element(&shipped, "org.hostd.Host1.Job")), normalize(&job));
}
