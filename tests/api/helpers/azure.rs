//! Azure Storage for tests: the shared Azurite started by `scripts/test.sh`
//! (`ORDERS_TEST_STORAGE`), or an Azurite of a test's own that it may stop and restart.
//! A test that needs Azurite and cannot have it fails; it never skips.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use orders_api::config::storage::StorageAccount;
use orders_api::store::azure::{self, Names, StorageClient, Timing};

pub const SETTING: &str = "ORDERS_TEST_STORAGE";

/// The shared Azurite's connection string; fails the test when it is not set.
pub fn connection_string() -> String {
    match std::env::var(SETTING) {
        Ok(value) if !value.trim().is_empty() => value,
        _ => panic!(
            "{SETTING} is not set: this test needs Azurite. Run scripts/test.sh, or \
             `eval \"$(scripts/azurite.sh start)\"` before cargo test."
        ),
    }
}

/// Letters and digits, unique per call: table, queue and container names of one test.
pub fn unique_suffix() -> String {
    format!("t{:016x}", rand::random::<u64>())
}

pub fn unique_names() -> Names {
    Names::suffixed(&unique_suffix())
}

/// Short deadlines, so failure tests finish quickly; still generous for a loaded machine.
pub fn test_timing() -> Timing {
    Timing {
        deadline: Duration::from_secs(5),
        max_attempts: 3,
        first_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(400),
    }
}

/// For the real emulator: its answers decide the tests, never a deadline (which only bounds a
/// wait on a machine that has stopped answering).
pub fn client_for(connection_string: &str) -> Arc<StorageClient> {
    let account = StorageAccount::from_connection_string(connection_string)
        .unwrap_or_else(|e| panic!("bad connection string: {e}"));
    let timing = Timing {
        deadline: crate::helpers::PATIENCE / 2,
        ..test_timing()
    };
    azure::connect(account, timing).unwrap()
}

pub fn shared_client() -> Arc<StorageClient> {
    client_for(&connection_string())
}

/// An Azurite of the test's own, on free loopback ports, keeping its data on disk so that it
/// survives a stop and a restart.
pub struct Azurite {
    child: Option<Child>,
    pub ports: [u16; 3],
    pub dir: PathBuf,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

fn azurite_binary() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("node_modules/.bin/azurite");
    assert!(
        path.exists(),
        "{} is missing: run `scripts/azurite.sh install` (or scripts/test.sh)",
        path.display()
    );
    path
}

impl Azurite {
    pub async fn start() -> Azurite {
        let dir = std::env::temp_dir().join(format!("azurite-test-{}", unique_suffix()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut azurite = Azurite {
            child: None,
            ports: [free_port(), free_port(), free_port()],
            dir,
        };
        azurite.run().await;
        azurite
    }

    async fn run(&mut self) {
        let [blob, queue, table] = self.ports;
        let child = Command::new(azurite_binary())
            .args(["--blobHost", "127.0.0.1", "--blobPort", &blob.to_string()])
            .args([
                "--queueHost",
                "127.0.0.1",
                "--queuePort",
                &queue.to_string(),
            ])
            .args([
                "--tableHost",
                "127.0.0.1",
                "--tablePort",
                &table.to_string(),
            ])
            .arg("--location")
            .arg(&self.dir)
            .args([
                "--disableTelemetry",
                "--skipApiVersionCheck",
                "--loose",
                "--silent",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start Azurite");
        self.child = Some(child);
        let ports = self.ports;
        super::eventually("Azurite accepting connections", || async move {
            ports
                .iter()
                .all(|p| std::net::TcpStream::connect(("127.0.0.1", *p)).is_ok())
                .then_some(())
                .ok_or_else(|| format!("ports {ports:?} not all open"))
        })
        .await;
    }

    pub fn connection_string(&self) -> String {
        let [blob, queue, table] = self.ports;
        format!(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={};\
             BlobEndpoint=http://127.0.0.1:{blob}/devstoreaccount1;\
             QueueEndpoint=http://127.0.0.1:{queue}/devstoreaccount1;\
             TableEndpoint=http://127.0.0.1:{table}/devstoreaccount1;",
            orders_api::config::storage::DEVELOPMENT_KEY
        )
    }

    /// Stops it gracefully (SIGTERM), so it saves its data, and waits until it has exited.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            super::eventually("Azurite exiting after SIGTERM", || {
                let exited = child.try_wait().ok().flatten().is_some();
                async move { exited.then_some(()).ok_or_else(|| "running".to_owned()) }
            })
            .await;
            let _ = child.wait();
        }
        let ports = self.ports;
        super::eventually("Azurite's ports refusing connections", || async move {
            ports
                .iter()
                .all(|p| std::net::TcpStream::connect(("127.0.0.1", *p)).is_err())
                .then_some(())
                .ok_or_else(|| format!("ports {ports:?} still open"))
        })
        .await;
    }

    /// Starts it again on the same ports with the same data.
    pub async fn restart(&mut self) {
        self.run().await;
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
