//! A local Kubernetes control plane: a real etcd and kube-apiserver, built
//! from their published Go modules (see `harness/control-plane/build.sh`)
//! and started on free loopback ports with the flags controller-runtime's
//! envtest uses. No Docker, no kubelet, no controller-manager: exactly the
//! API server semantics the controller depends on (OpenAPI schemas and
//! defaults, CEL rules, the status subresource, watches, resourceVersion
//! conflicts, RBAC).
//!
//! ```text
//!  LocalControlPlane::start()
//!    ├─ Pki::generate()            CA, serving cert, admin client cert, SA keys (rcgen)
//!    ├─ supervisor thread          spawns etcd + kube-apiserver (tied to it by PDEATHSIG)
//!    ├─ wait for /readyz           fails early, with both log tails, if either exits
//!    └─ kubeconfig (inline certs)  -> client() / write_kubeconfig()
//!  crash_and_restart(component)  SIGKILL one, wait, start it again (chaos)
//!  drop: SIGKILL both, reap them, remove the directory
//! ```
//!
//! The processes are children of a dedicated supervisor thread and are
//! started through `setpriv --pdeathsig KILL` where it exists, so they die
//! with that thread even when the owner is never dropped (a `static` shared
//! by a test binary) or the test process is killed.

mod binaries;
mod pki;

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::Engine as _;
use kube::config::{KubeConfigOptions, Kubeconfig};

pub use binaries::{Binaries, PinnedVersions, cache_dir};
pub use pki::Pki;

/// How long the API server may take to report ready.
const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// Lines of each log included in a startup error.
const LOG_TAIL_LINES: usize = 30;

/// Why a control plane could not be started or used.
#[derive(Debug, thiserror::Error)]
pub enum ControlPlaneError {
    #[error("control plane binaries: {0}")]
    Binaries(String),
    #[error("generating certificates: {0}")]
    Pki(String),
    #[error("{0}")]
    Io(String),
    #[error(
        "control plane did not start: {reason}\n--- etcd log (last lines) ---\n{etcd_log}\n--- kube-apiserver log (last lines) ---\n{apiserver_log}"
    )]
    Startup {
        reason: String,
        etcd_log: String,
        apiserver_log: String,
    },
    #[error("building a client from the kubeconfig: {0}")]
    Client(String),
}

fn io(what: impl std::fmt::Display, e: std::io::Error) -> ControlPlaneError {
    ControlPlaneError::Io(format!("{what}: {e}"))
}

/// A running etcd and kube-apiserver on loopback.
pub struct LocalControlPlane {
    api_url: String,
    kubeconfig: String,
    binaries: Binaries,
    supervisor: Option<Supervisor>,
    dir: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for LocalControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalControlPlane")
            .field("api_url", &self.api_url)
            .field("pids", &self.pids())
            .finish()
    }
}

impl LocalControlPlane {
    /// Locates (or builds, once) the binaries and starts a control plane.
    pub async fn start() -> Result<Self, ControlPlaneError> {
        let binaries = tokio::task::spawn_blocking(Binaries::locate_or_build)
            .await
            .map_err(|e| ControlPlaneError::Binaries(e.to_string()))??;
        Self::start_with(binaries).await
    }

    /// Starts a control plane from the given binaries.
    pub async fn start_with(binaries: Binaries) -> Result<Self, ControlPlaneError> {
        remove_stale_dirs();
        let dir = tempfile::Builder::new()
            .prefix(&format!("cvk-cp-{}-", std::process::id()))
            .tempdir()
            .map_err(|e| io("creating the control plane directory", e))?;
        let root = dir.path().to_owned();
        let pki = Pki::generate()?;
        let files = Files::write(&root, &pki)?;

        let [etcd_client, etcd_peer, secure] = free_ports()?;
        let api_url = format!("https://127.0.0.1:{secure}");
        let etcd_url = format!("http://127.0.0.1:{etcd_client}");
        let peer_url = format!("http://127.0.0.1:{etcd_peer}");
        let etcd_args = vec![
            "--name=cvk".to_owned(),
            format!("--data-dir={}", root.join("etcd").display()),
            format!("--listen-client-urls={etcd_url}"),
            format!("--advertise-client-urls={etcd_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=cvk={peer_url}"),
            // Throwaway data: no fsync, as envtest.
            "--unsafe-no-fsync=true".to_owned(),
            "--log-level=warn".to_owned(),
        ];
        let apiserver_args = vec![
            format!("--etcd-servers={etcd_url}"),
            "--bind-address=127.0.0.1".to_owned(),
            "--advertise-address=127.0.0.1".to_owned(),
            format!("--secure-port={secure}"),
            format!("--cert-dir={}", root.join("apiserver-certs").display()),
            format!("--tls-cert-file={}", files.serving_cert.display()),
            format!("--tls-private-key-file={}", files.serving_key.display()),
            format!("--client-ca-file={}", files.ca_cert.display()),
            "--authorization-mode=RBAC".to_owned(),
            // No controller-manager issues tokens: the ServiceAccount
            // admission plugin would refuse every pod.
            "--disable-admission-plugins=ServiceAccount".to_owned(),
            format!("--service-account-issuer={api_url}/"),
            format!("--service-account-key-file={}", files.sa_pub.display()),
            format!(
                "--service-account-signing-key-file={}",
                files.sa_key.display()
            ),
            // A range for Service IPs the API server hands out; nothing is
            // ever routed to it.
            "--service-cluster-ip-range=10.0.0.0/24".to_owned(),
            "--allow-privileged=true".to_owned(),
        ];
        let supervisor = Supervisor::spawn(vec![
            Proc::new("etcd", &binaries.etcd, etcd_args, root.join("etcd.log")),
            Proc::new(
                "kube-apiserver",
                &binaries.kube_apiserver,
                apiserver_args,
                root.join("kube-apiserver.log"),
            ),
        ])?;

        let kubeconfig = kubeconfig_yaml(&api_url, &pki);
        let mut cp = Self {
            api_url,
            kubeconfig,
            binaries,
            supervisor: Some(supervisor),
            dir: Some(dir),
        };
        if let Err(reason) = cp.wait_ready().await {
            let err = cp.startup_error(reason);
            cp.stop();
            return Err(err);
        }
        Ok(cp)
    }

    async fn wait_ready(&self) -> Result<(), String> {
        let client = self.client().await.map_err(|e| e.to_string())?;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(exit) = self.supervisor.as_ref().and_then(Supervisor::first_exit) {
                return Err(exit);
            }
            let req = http::Request::get("/readyz")
                .body(Vec::new())
                .expect("static request");
            let last = match client.request_text(req).await {
                Ok(body) if body.trim() == "ok" => return Ok(()),
                Ok(body) => format!("/readyz said {body:?}"),
                Err(e) => format!("/readyz: {e}"),
            };
            if Instant::now() > deadline {
                return Err(format!("not ready after {READY_TIMEOUT:?} ({last})"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn startup_error(&self, reason: String) -> ControlPlaneError {
        let root = self
            .dir
            .as_ref()
            .map(|d| d.path().to_owned())
            .unwrap_or_default();
        ControlPlaneError::Startup {
            reason,
            etcd_log: log_tail(&root.join("etcd.log")),
            apiserver_log: log_tail(&root.join("kube-apiserver.log")),
        }
    }

    /// The API server's URL (`https://127.0.0.1:<port>`).
    pub fn api_url(&self) -> &str {
        &self.api_url
    }

    /// An admin kubeconfig with the certificates inline.
    pub fn kubeconfig_yaml(&self) -> &str {
        &self.kubeconfig
    }

    /// Writes the admin kubeconfig to `path` (mode 0600).
    pub fn write_kubeconfig(&self, path: &Path) -> Result<(), ControlPlaneError> {
        write_private(path, &self.kubeconfig)
    }

    /// The binaries this control plane runs.
    pub fn binaries(&self) -> &Binaries {
        &self.binaries
    }

    /// A new admin client. Each caller gets its own: a client belongs to
    /// the tokio runtime it was made on, and tests each have their own.
    pub async fn client(&self) -> Result<kube::Client, ControlPlaneError> {
        client_from_kubeconfig(&self.kubeconfig).await
    }

    /// Process ids of etcd and kube-apiserver, while they run.
    pub fn pids(&self) -> Vec<u32> {
        self.supervisor
            .as_ref()
            .map(Supervisor::pids)
            .unwrap_or_default()
    }

    /// SIGKILLs one component (a crash: etcd keeps its data directory, the
    /// API server its flags), waits `down`, starts it again on the same
    /// ports and waits until the API server reports ready. For chaos trials:
    /// clients see refused connections and failed watches meanwhile.
    pub async fn crash_and_restart(
        &self,
        component: Component,
        down: Duration,
    ) -> Result<(), ControlPlaneError> {
        let supervisor = self
            .supervisor
            .as_ref()
            .ok_or_else(|| ControlPlaneError::Io("the control plane is stopped".into()))?;
        supervisor
            .kill(component)
            .map_err(|e| ControlPlaneError::Io(format!("killing {component}: {e}")))?;
        tokio::time::sleep(down).await;
        supervisor
            .start(component)
            .map_err(|e| ControlPlaneError::Io(format!("restarting {component}: {e}")))?;
        self.wait_ready()
            .await
            .map_err(|reason| self.startup_error(format!("after restarting {component}: {reason}")))
    }

    /// Stops both processes and removes the directory (what drop does).
    pub fn stop(&mut self) {
        if let Some(supervisor) = self.supervisor.take() {
            supervisor.stop();
        }
        if let Some(dir) = self.dir.take() {
            let path = dir.path().to_owned();
            if let Err(e) = dir.close() {
                tracing::warn!(dir = %path.display(), error = %e, "removing the control plane directory");
            }
        }
    }
}

impl Drop for LocalControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Builds a client from kubeconfig text.
pub async fn client_from_kubeconfig(yaml: &str) -> Result<kube::Client, ControlPlaneError> {
    let kubeconfig =
        Kubeconfig::from_yaml(yaml).map_err(|e| ControlPlaneError::Client(e.to_string()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| ControlPlaneError::Client(e.to_string()))?;
    kube::Client::try_from(config).map_err(|e| ControlPlaneError::Client(e.to_string()))
}

fn kubeconfig_yaml(api_url: &str, pki: &Pki) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: cvk-local\n  cluster:\n    server: {api_url}\n    \
         certificate-authority-data: {ca}\nusers:\n- name: cvk-admin\n  user:\n    client-certificate-data: {cert}\n    \
         client-key-data: {key}\ncontexts:\n- name: cvk-local\n  context:\n    cluster: cvk-local\n    user: cvk-admin\n    \
         namespace: default\ncurrent-context: cvk-local\n",
        ca = b64(&pki.ca_cert),
        cert = b64(&pki.admin_cert),
        key = b64(&pki.admin_key),
    )
}

struct Files {
    ca_cert: PathBuf,
    serving_cert: PathBuf,
    serving_key: PathBuf,
    sa_key: PathBuf,
    sa_pub: PathBuf,
}

impl Files {
    fn write(root: &Path, pki: &Pki) -> Result<Self, ControlPlaneError> {
        let files = Self {
            ca_cert: root.join("ca.crt"),
            serving_cert: root.join("apiserver.crt"),
            serving_key: root.join("apiserver.key"),
            sa_key: root.join("sa.key"),
            sa_pub: root.join("sa.pub"),
        };
        write_private(&files.ca_cert, &pki.ca_cert)?;
        write_private(&files.serving_cert, &pki.serving_cert)?;
        write_private(&files.serving_key, &pki.serving_key)?;
        write_private(&files.sa_key, &pki.sa_key)?;
        write_private(&files.sa_pub, &pki.sa_pub)?;
        Ok(files)
    }
}

/// Writes `contents` to `path`, readable by the owner only.
pub fn write_private(path: &Path, contents: &str) -> Result<(), ControlPlaneError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| io(format!("writing {}", path.display()), e))?;
    f.write_all(contents.as_bytes())
        .map_err(|e| io(format!("writing {}", path.display()), e))
}

/// Three distinct free loopback ports. They are released before the
/// processes bind them; a collision shows up as a startup error.
fn free_ports() -> Result<[u16; 3], ControlPlaneError> {
    let listeners = (0..3)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| io("finding free loopback ports", e))?;
    let port = |l: &TcpListener| l.local_addr().map(|a| a.port());
    Ok([
        port(&listeners[0]).map_err(|e| io("port", e))?,
        port(&listeners[1]).map_err(|e| io("port", e))?,
        port(&listeners[2]).map_err(|e| io("port", e))?,
    ])
}

fn log_tail(path: &Path) -> String {
    let Ok(mut f) = File::open(path) else {
        return format!("({} was not written)", path.display());
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut text = String::new();
    let _ = f.read_to_string(&mut text);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

/// Removes directories left by control planes of processes that no longer
/// exist (a test binary's shared control plane is never dropped).
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("cvk-cp-")) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// One process to run.
struct Proc {
    name: &'static str,
    program: PathBuf,
    args: Vec<String>,
    log: PathBuf,
}

impl Proc {
    fn new(name: &'static str, program: &Path, args: Vec<String>, log: PathBuf) -> Self {
        Self {
            name,
            program: program.to_owned(),
            args,
            log,
        }
    }

    fn spawn(&self) -> Result<Child, ControlPlaneError> {
        let log = File::create(&self.log)
            .map_err(|e| io(format!("creating {}", self.log.display()), e))?;
        let err_log = log.try_clone().map_err(|e| io("log file", e))?;
        let mut cmd = match setpriv() {
            Some(setpriv) => {
                let mut c = Command::new(setpriv);
                c.arg("--pdeathsig")
                    .arg("KILL")
                    .arg("--")
                    .arg(&self.program);
                c
            }
            None => Command::new(&self.program),
        };
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err_log)
            .spawn()
            .map_err(|e| io(format!("starting {}", self.program.display()), e))
    }
}

fn setpriv() -> Option<PathBuf> {
    ["/usr/bin/setpriv", "/bin/setpriv"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// What the owner asks of the supervisor thread.
enum Cmd {
    /// Kill every process and end the thread.
    Stop,
    /// SIGKILL one component and reap it (a crash, for chaos tests).
    Kill(Component, mpsc::Sender<Result<(), String>>),
    /// Start a killed component again with the same flags, ports and data.
    Start(Component, mpsc::Sender<Result<u32, String>>),
}

/// One of the control plane's processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Component {
    Etcd,
    KubeApiserver,
}

impl Component {
    fn name(self) -> &'static str {
        match self {
            Component::Etcd => "etcd",
            Component::KubeApiserver => "kube-apiserver",
        }
    }
}

impl std::fmt::Display for Component {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The thread that owns the processes.
struct Supervisor {
    cmd: mpsc::Sender<Cmd>,
    thread: Option<JoinHandle<()>>,
    pids: Arc<Mutex<Vec<u32>>>,
    exits: Arc<Mutex<Vec<String>>>,
}

impl Supervisor {
    fn spawn(procs: Vec<Proc>) -> Result<Self, ControlPlaneError> {
        let (cmd_tx, cmd_rx) = mpsc::channel::<Cmd>();
        let (started_tx, started_rx) = mpsc::channel::<Result<Vec<u32>, ControlPlaneError>>();
        let exits = Arc::new(Mutex::new(Vec::new()));
        let pids = Arc::new(Mutex::new(Vec::new()));
        let seen = exits.clone();
        let shared_pids = pids.clone();
        let thread = std::thread::Builder::new()
            .name("cvk-control-plane".into())
            .spawn(move || {
                // One slot per process, in start order; `None` while a
                // component is deliberately down.
                let mut children: Vec<(&'static str, Option<Child>)> = Vec::new();
                for p in &procs {
                    match p.spawn() {
                        Ok(child) => children.push((p.name, Some(child))),
                        Err(e) => {
                            kill_all(&mut children);
                            let _ = started_tx.send(Err(e));
                            return;
                        }
                    }
                }
                let current = |children: &[(&'static str, Option<Child>)]| -> Vec<u32> {
                    children
                        .iter()
                        .filter_map(|(_, c)| c.as_ref().map(Child::id))
                        .collect()
                };
                *shared_pids.lock().expect("pids lock") = current(&children);
                let _ = started_tx.send(Ok(current(&children)));
                // Runs until told to stop or the owner is gone.
                loop {
                    match cmd_rx.recv_timeout(Duration::from_millis(200)) {
                        Ok(Cmd::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
                        Ok(Cmd::Kill(component, reply)) => {
                            let slot = children.iter_mut().find(|(n, _)| *n == component.name());
                            let result = match slot {
                                Some((_, child @ Some(_))) => {
                                    let mut c = child.take().expect("checked");
                                    let _ = c.kill();
                                    let _ = c.wait();
                                    Ok(())
                                }
                                _ => Err(format!("{component} is not running")),
                            };
                            *shared_pids.lock().expect("pids lock") = current(&children);
                            let _ = reply.send(result);
                        }
                        Ok(Cmd::Start(component, reply)) => {
                            let index = procs.iter().position(|p| p.name == component.name());
                            let result = match index {
                                Some(i) if children[i].1.is_none() => match procs[i].spawn() {
                                    Ok(child) => {
                                        let pid = child.id();
                                        children[i].1 = Some(child);
                                        Ok(pid)
                                    }
                                    Err(e) => Err(e.to_string()),
                                },
                                Some(_) => Err(format!("{component} is already running")),
                                None => Err(format!("{component} is not supervised here")),
                            };
                            *shared_pids.lock().expect("pids lock") = current(&children);
                            let _ = reply.send(result);
                        }
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                    }
                    for (name, child) in &mut children {
                        if let Some(Ok(Some(status))) = child.as_mut().map(Child::try_wait) {
                            let mut exits = seen.lock().expect("exits lock");
                            let line = format!("{name} exited: {status}");
                            if !exits.contains(&line) {
                                exits.push(line);
                            }
                        }
                    }
                }
                kill_all(&mut children);
            })
            .map_err(|e| io("starting the supervisor thread", e))?;
        started_rx
            .recv()
            .map_err(|_| ControlPlaneError::Io("the supervisor thread died".into()))??;
        Ok(Self {
            cmd: cmd_tx,
            thread: Some(thread),
            pids,
            exits,
        })
    }

    fn first_exit(&self) -> Option<String> {
        self.exits.lock().expect("exits lock").first().cloned()
    }

    fn pids(&self) -> Vec<u32> {
        self.pids.lock().expect("pids lock").clone()
    }

    fn kill(&self, component: Component) -> Result<(), String> {
        let (tx, rx) = mpsc::channel();
        self.cmd
            .send(Cmd::Kill(component, tx))
            .map_err(|_| "the supervisor thread is gone".to_owned())?;
        rx.recv()
            .map_err(|_| "the supervisor thread is gone".to_owned())?
    }

    fn start(&self, component: Component) -> Result<u32, String> {
        let (tx, rx) = mpsc::channel();
        self.cmd
            .send(Cmd::Start(component, tx))
            .map_err(|_| "the supervisor thread is gone".to_owned())?;
        rx.recv()
            .map_err(|_| "the supervisor thread is gone".to_owned())?
    }

    fn stop(mut self) {
        let _ = self.cmd.send(Cmd::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn kill_all(children: &mut [(&'static str, Option<Child>)]) {
    // The API server first, so it does not log a storm of etcd errors.
    for (_, child) in children.iter_mut().rev() {
        if let Some(mut child) = child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
