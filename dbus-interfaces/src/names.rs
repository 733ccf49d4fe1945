//! Fixed names of the hostd D-Bus API.

/// Well-known bus name owned by the daemon.
pub const BUS_NAME: &str = "org.hostd.Host1";
/// Object path of the manager object.
pub const MANAGER_PATH: &str = "/org/hostd/Host1";
/// Interface of the manager object.
pub const MANAGER_INTERFACE: &str = "org.hostd.Host1";
/// Interface of job objects.
pub const JOB_INTERFACE: &str = "org.hostd.Host1.Job";
/// Prefix of job object paths; the job id follows.
pub const JOB_PATH_PREFIX: &str = "/org/hostd/Host1/job/";
/// Prefix of every error name hostd replies with.
pub const ERROR_PREFIX: &str = "org.hostd.Host1.Error";
/// Prefix of polkit action ids; the verb follows.
pub const ACTION_PREFIX: &str = "org.hostd.host1.";

/// Object path of the job with the given id.
pub fn job_path(id: u64) -> String {
    format!("{JOB_PATH_PREFIX}{id}")
}
