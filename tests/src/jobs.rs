//! Starting a job over the bus and recording what a subscribed client sees
//! of it: every property change, in order, until its final state.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use futures_util::StreamExt;
use hostd_interface::names::{BUS_NAME, JOB_INTERFACE, MANAGER_INTERFACE, MANAGER_PATH};
use hostd_interface::Error;
use zbus::message::Type;
use zbus::{Connection, MatchRule, MessageStream, OwnedObjectPath, OwnedVariant};

/// Longest a test waits for a job.
const JOB_DEADLINE: Duration = Duration::from_secs(180);

/// What a client saw of one job.
#[derive(Debug, Clone, Default)]
pub struct JobRecord {
    /// The job object path.
    pub path: String,
    /// `Phase` values in the order seen (repeats collapsed).
    pub phases: Vec<String>,
    /// (`BytesDone`, `BytesTotal`) in the order seen.
    pub bytes: Vec<(u64, u64)>,
    /// Current `State`.
    pub state: String,
    /// Current `Message`.
    pub message: String,
    /// Current `LayersDone`.
    pub layers_done: u32,
    /// Current `LayersTotal`.
    pub layers_total: u32,
    /// Current `ErrorName`.
    pub error_name: String,
    /// Current `ErrorMessage`.
    pub error_message: String,
    /// Current `Warnings`.
    pub warnings: Vec<String>,
}

impl JobRecord {
    fn apply(&mut self, props: &HashMap<String, OwnedVariant>) {
        let text = |v: &OwnedVariant| String::try_from(v.try_clone().expect("clonable")).unwrap_or_default();
        let mut bytes = self.bytes.last().copied().unwrap_or_default();
        let mut bytes_changed = false;
        for (name, v) in props {
            match name.as_str() {
                "State" => self.state = text(v),
                "Message" => self.message = text(v),
                "ErrorName" => self.error_name = text(v),
                "ErrorMessage" => self.error_message = text(v),
                "Warnings" => self.warnings = Vec::<String>::try_from(v.try_clone().expect("clonable")).unwrap_or_default(),
                "LayersDone" => self.layers_done = u32::try_from(&**v).unwrap_or_default(),
                "LayersTotal" => self.layers_total = u32::try_from(&**v).unwrap_or_default(),
                "Phase" => {
                    let phase = text(v);
                    if self.phases.last() != Some(&phase) {
                        self.phases.push(phase);
                    }
                }
                "BytesDone" => {
                    bytes.0 = u64::try_from(&**v).unwrap_or_default();
                    bytes_changed = true;
                }
                "BytesTotal" => {
                    bytes.1 = u64::try_from(&**v).unwrap_or_default();
                    bytes_changed = true;
                }
                _ => {}
            }
        }
        if bytes_changed {
            self.bytes.push(bytes);
        }
    }

    /// The job ended (succeeded, failed or cancelled).
    pub fn finished(&self) -> bool {
        !self.state.is_empty() && self.state != "running"
    }

    /// The job's error, if it failed or was cancelled.
    pub fn error(&self) -> Option<Error> {
        (!self.error_name.is_empty()).then(|| Error::from_name(&self.error_name, self.error_message.clone()))
    }
}

/// A job being followed.
#[derive(Debug)]
pub struct JobWatch {
    conn: Connection,
    changes: MessageStream,
    /// What has been seen so far.
    pub record: JobRecord,
}

/// The method error of a call, as the API's error.
pub fn call_error(e: zbus::Error) -> Error {
    match e {
        zbus::Error::MethodError(name, message, _) => Error::from_name(name.as_str(), message.unwrap_or_default()),
        other => Error::Failed(other.to_string()),
    }
}

impl JobWatch {
    /// Call `method` on the manager with `body`; on success follow the job it
    /// returned. Subscribes before calling, so no change is missed.
    pub async fn start<B>(conn: &Connection, method: &str, body: &B) -> std::result::Result<JobWatch, Error>
    where
        B: serde::ser::Serialize + zbus::zvariant::DynamicType,
    {
        let rule = MatchRule::builder()
            .msg_type(Type::Signal)
            .interface("org.freedesktop.DBus.Properties")
            .member("PropertiesChanged")
            .path_namespace("/org/hostd/Host1/job")
            .build()
            .map_err(|e| Error::Failed(e.to_string()))?;
        let changes = MessageStream::for_match_rule(rule, conn, std::num::NonZeroUsize::new(10_000))
            .await
            .map_err(|e| Error::Failed(e.to_string()))?;
        let reply = conn
            .call_method(Some(BUS_NAME), MANAGER_PATH, Some(MANAGER_INTERFACE), method, body)
            .await
            .map_err(call_error)?;
        let path: OwnedObjectPath = reply.body().deserialize().map_err(|e| Error::Failed(e.to_string()))?;
        let mut watch = JobWatch {
            conn: conn.clone(),
            changes,
            record: JobRecord { path: path.to_string(), ..Default::default() },
        };
        let all = watch.get_all().await.map_err(|e| Error::Failed(format!("{e:#}")))?;
        watch.record.apply(&all);
        Ok(watch)
    }

    async fn get_all(&self) -> Result<HashMap<String, OwnedVariant>> {
        let reply = self
            .conn
            .call_method(
                Some(BUS_NAME),
                self.record.path.as_str(),
                Some("org.freedesktop.DBus.Properties"),
                "GetAll",
                &(JOB_INTERFACE,),
            )
            .await?;
        Ok(reply.body().deserialize()?)
    }

    /// Wait until `done` holds for the record or the job has finished.
    pub async fn until(&mut self, done: impl Fn(&JobRecord) -> bool) -> Result<&JobRecord> {
        let deadline = tokio::time::Instant::now() + JOB_DEADLINE;
        while !done(&self.record) && !self.record.finished() {
            let msg = tokio::time::timeout_at(deadline, self.changes.next())
                .await
                .with_context(|| format!("job {} did not get there in time: {:?}", self.record.path, self.record))?;
            let Some(msg) = msg else { bail!("the bus connection closed") };
            let msg = msg?;
            let header = msg.header();
            if header.path().map(|p| p.as_str()) != Some(self.record.path.as_str()) {
                continue;
            }
            let (iface, changed, _invalidated): (String, HashMap<String, OwnedVariant>, Vec<String>) =
                msg.body().deserialize()?;
            if iface == JOB_INTERFACE {
                self.record.apply(&changed);
            }
        }
        Ok(&self.record)
    }

    /// Follow the job to its end.
    pub async fn finish(mut self) -> Result<JobRecord> {
        self.until(|_| false).await?;
        Ok(self.record)
    }

    /// Call `Cancel()` on the job.
    pub async fn cancel(&self) -> std::result::Result<(), Error> {
        self.conn
            .call_method(Some(BUS_NAME), self.record.path.as_str(), Some(JOB_INTERFACE), "Cancel", &())
            .await
            .map_err(call_error)?;
        Ok(())
    }
}

/// Run `method` to its end and return what was seen.
pub async fn run_job<B>(conn: &Connection, method: &str, body: &B) -> std::result::Result<JobRecord, Error>
where
    B: serde::ser::Serialize + zbus::zvariant::DynamicType,
{
    let watch = JobWatch::start(conn, method, body).await?;
    watch.finish().await.map_err(|e| Error::Failed(format!("{e:#}")))
}
