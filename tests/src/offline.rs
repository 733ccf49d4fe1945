//! The common starting point of the offline-sysroot tests: v1 deployed from
//! an `oci:` directory, and readers of what hostd then reports.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::process::Output;

use hostd_interface::host::Host;
use zbus::{Connection, Variant};

use crate::fixture::{BuiltImage, ImageBuilder};
use crate::schema;
use crate::sysroot::TestSysroot;

/// An offline sysroot with v1 deployed, and the builder of later versions.
#[derive(Debug)]
pub struct OfflineHost {
    /// The sysroot hostd manages.
    pub sysroot: TestSysroot,
    /// Builds v2, v3, … into the same `oci:` directory.
    pub builder: ImageBuilder,
    /// The deployed image.
    pub v1: BuiltImage,
}

/// A `size` tmpfs sysroot with v1 deployed; `sizes` overrides component payloads.
pub async fn host_with_v1(size: &str, sizes: &[(&'static str, usize)]) -> OfflineHost {
    let sysroot = TestSysroot::new(size).unwrap();
    let mut builder = ImageBuilder::new(&sysroot.dir.path().join("images")).unwrap();
    builder.sizes.extend(sizes.iter().copied());
    let v1 = builder.build("v1", &[], &BTreeMap::new()).await.unwrap();
    sysroot.deploy_image(&v1.reference).await.unwrap();
    OfflineHost { sysroot, builder, v1 }
}

/// `Status` as JSON text.
pub async fn status_json(conn: &Connection) -> String {
    let no_options: HashMap<&str, Variant<'_>> = HashMap::new();
    conn.call_method(Some("org.hostd.Host1"), "/org/hostd/Host1", Some("org.hostd.Host1"), "Status", &(no_options,))
        .await
        .unwrap()
        .body()
        .deserialize()
        .unwrap()
}

/// `Status`, validated against bootc's Host schema.
pub async fn status(conn: &Connection) -> Host {
    let json = status_json(conn).await;
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    schema::validate("bootc-host-v1.schema.json", &value).unwrap();
    serde_json::from_str(&json).unwrap()
}

/// (version, digest) of each deployment in boot order.
pub async fn deployed(conn: &Connection) -> Vec<(String, String)> {
    status(conn)
        .await
        .entries()
        .map(|e| {
            let i = e.image.as_ref().expect("image deployment");
            (i.version.clone().unwrap_or_default(), i.image_digest.clone())
        })
        .collect()
}

/// (version, digest) of a built image, to compare with [`deployed`].
pub fn vd(image: &BuiltImage) -> (String, String) {
    (image.version.clone(), image.digest.clone())
}

/// A command's stdout and stderr, for assertion messages.
pub fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}
