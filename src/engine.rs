//! Stage 2: the Docker Engine, through its API only (bollard).
//!
//! Gets the base (pull by digest, or import a rootfs tarball), creates the build container,
//! copies scripts in through the archive API (no bind mounts, so a remote engine reached through
//! `DOCKER_HOST` works the same), runs them with streamed output, and hands out the export
//! stream. Every call that creates something on the engine is paired with a removal that the
//! build stage runs on every exit path.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::Docker;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, RemoveContainerOptionsBuilder,
    UploadToContainerOptionsBuilder,
};
use bytes::Bytes;
use futures_util::{Stream, StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use crate::definition::Script;
use crate::ui::{Progress, Ui};

/// Where scripts are copied in the build container. Removed before export.
pub const SCRIPT_DIR: &str = "/.lxcforge";
/// Lines of a failing script's output repeated in the error.
const TAIL_LINES: usize = 20;
/// A single output line longer than this is cut (the rest still streams as further lines).
const MAX_LINE: usize = 8 * 1024;
/// Request timeout for the engine: must cover uploading a whole rootfs to `images/create`,
/// since bollard's timeout runs until the response headers arrive.
const ENGINE_TIMEOUT: Duration = Duration::from_secs(3600);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// Label put on everything the build creates, so a leak can be found (`docker ps -a --filter`).
pub const LABEL: &str = "org.lxcforge.build";
/// Which process made a build container (`gc::Owner`), so a later run can tell a leftover of a
/// dead build from a build in progress.
pub const OWNER_LABEL: &str = "org.lxcforge.owner";
/// The project root (absolute) a build container was made for: a build collects only its own
/// project's leftovers.
pub const PROJECT_LABEL: &str = "org.lxcforge.project";

/// The project root as recorded in `PROJECT_LABEL`.
pub fn project_id(root: &Path) -> String {
    std::fs::canonicalize(root)
        .unwrap_or_else(|_| root.to_owned())
        .display()
        .to_string()
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(
        "cannot reach the Docker Engine at {endpoint}: {cause}\n  fix: start the Docker daemon, or point DOCKER_HOST at a reachable engine (DOCKER_HOST={docker_host})"
    )]
    Unreachable {
        endpoint: String,
        docker_host: String,
        cause: String,
    },
    #[error(
        "cannot pull base image {reference}: {cause}\n  fix: this engine cannot fetch the image from its registry. Supply the base offline: \
         load it on this engine (`docker load -i image.tar`, saved with `docker save` on a machine that can pull it), \
         or build from a rootfs tarball instead: set `rootfs = \"bases/<file>.tar.gz\"` in the definition's [base] \
         (`make base.debian-12` makes one with debootstrap)"
    )]
    NotPullable { reference: String, cause: String },
    #[error(
        "base image {reference} resolved to {got}, not the pinned {expected}\n  fix: the engine holds a different image under that name; remove it (`docker rmi {reference}`) and build again"
    )]
    DigestMismatch {
        reference: String,
        expected: String,
        got: String,
    },
    #[error(
        "rootfs {path} has sha256 {got}, but the definition pins {expected}\n  fix: the file changed or is not the one the definition meant; rebuild or re-download it, or update base.sha256 if the change is intended"
    )]
    RootfsMismatch {
        path: String,
        expected: String,
        got: String,
    },
    #[error("cannot read rootfs {path}: {cause}\n  fix: {fix}")]
    Rootfs {
        path: String,
        cause: String,
        fix: String,
    },
    #[error(
        "script {script} failed with exit code {code}\n--- last lines of {script} ---\n{}\n  fix: correct the script (run it in a container of the base image to debug: `docker run -it --rm <base> sh`)",
        .tail.join("\n")
    )]
    ScriptFailed {
        script: String,
        code: i64,
        tail: Vec<String>,
    },
    #[error(
        "script {script} did not finish within {}\n--- last lines of {script} ---\n{}\n  fix: find what the script waits for (a prompt? a network call?), or raise --script-timeout",
        humantime::format_duration(*.timeout),
        .tail.join("\n")
    )]
    ScriptTimeout {
        script: String,
        timeout: Duration,
        tail: Vec<String>,
    },
    #[error("Docker Engine refused to {action}: {cause}")]
    Api { action: String, cause: String },
    #[error(
        "lost the Docker Engine at {endpoint} while trying to {action}: {cause}\n  fix: check that the Docker daemon is running (`docker info`, `systemctl status docker`), then build again"
    )]
    Lost {
        endpoint: String,
        action: String,
        cause: String,
    },
}

impl EngineError {
    /// Says which step of the build was under way when the engine was lost.
    pub fn during(self, step: &str) -> EngineError {
        match self {
            EngineError::Lost {
                endpoint,
                action,
                cause,
            } => EngineError::Lost {
                endpoint,
                action: format!("{step} ({action})"),
                cause,
            },
            other => other,
        }
    }

    pub fn is_lost(&self) -> bool {
        matches!(self, EngineError::Lost { .. })
    }
}

/// Errors where no answer came back: the engine stopped, restarted, or the connection broke.
fn is_connection_error(e: &bollard::errors::Error) -> bool {
    use bollard::errors::Error as E;
    matches!(
        e,
        E::IOError { .. }
            | E::HyperResponseError { .. }
            | E::HyperLegacyError { .. }
            | E::SocketNotFoundError(_)
            | E::RequestTimeoutError
    )
}

/// An error and its causes in one line, each said once (bollard's messages repeat their source).
pub fn cause_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut next = e.source();
    while let Some(c) = next {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        next = c.source();
    }
    s
}

/// What the build started from, for the manifest.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ResolvedBase {
    /// `image` or `rootfs`.
    pub kind: &'static str,
    /// The reference or rootfs source as the definition gave it.
    pub reference: String,
    /// The content digest: the image's repo digest, or `sha256:<hex>` of the rootfs tarball.
    pub digest: String,
    /// The engine's image id the build container was created from.
    pub image_id: String,
    /// The name used to create the container.
    #[serde(skip)]
    pub image: String,
    /// Whether this run pulled or imported it (false: it was already on the engine).
    pub fetched: bool,
}

pub struct Engine {
    docker: Docker,
    pub endpoint: String,
}

impl Engine {
    /// Connects as the docker CLI would: `DOCKER_HOST` if set, else the local socket.
    pub async fn connect() -> Result<Engine, EngineError> {
        let docker_host = std::env::var("DOCKER_HOST").unwrap_or_default();
        let endpoint = if docker_host.is_empty() {
            "unix:///var/run/docker.sock (the default; DOCKER_HOST is not set)".to_owned()
        } else {
            format!("{docker_host} (from DOCKER_HOST)")
        };
        let unreachable = |cause: String| EngineError::Unreachable {
            endpoint: endpoint.clone(),
            docker_host: if docker_host.is_empty() {
                "<unset>".into()
            } else {
                docker_host.clone()
            },
            cause,
        };
        let docker = Docker::connect_with_local_defaults()
            .map_err(|e| unreachable(e.to_string()))?
            .with_timeout(ENGINE_TIMEOUT);
        // Lowers the client's API version to the daemon's (Debian's 20.10 speaks 1.41).
        let docker = match tokio::time::timeout(CONNECT_TIMEOUT, docker.negotiate_version()).await {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => return Err(unreachable(e.to_string())),
            Err(_) => {
                return Err(unreachable(format!(
                    "no answer within {}s",
                    CONNECT_TIMEOUT.as_secs()
                )));
            }
        };
        docker
            .ping()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        Ok(Engine { docker, endpoint })
    }

    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// Maps a failed call to `action` (a verb phrase) to an error naming this engine.
    fn api(&self, action: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> EngineError {
        let action = action.into();
        let endpoint = self.endpoint.clone();
        move |e| {
            if is_connection_error(&e) {
                let cause = match &e {
                    // The client's own wrapper says nothing the causes do not.
                    bollard::errors::Error::HyperLegacyError { err } => cause_chain(err),
                    other => cause_chain(other),
                };
                EngineError::Lost {
                    endpoint,
                    action,
                    cause,
                }
            } else {
                EngineError::Api {
                    action,
                    cause: engine_message(&e),
                }
            }
        }
    }

    /// Makes sure an image reference is on the engine, pulling it by digest if absent.
    pub async fn ensure_image(
        &self,
        reference: &str,
        repository: &str,
        tag: Option<&str>,
        digest: Option<&str>,
        ui: &Ui,
    ) -> Result<ResolvedBase, EngineError> {
        // Look the image up by digest when pinned: a tag may point elsewhere locally.
        let lookup = match digest {
            Some(d) => format!("{repository}@{d}"),
            None => format!("{repository}:{}", tag.unwrap_or("latest")),
        };
        let mut fetched = false;
        let inspect = match self.docker.inspect_image(&lookup).await {
            Ok(i) => {
                ui.info(format!("{lookup} is already on the engine"));
                i
            }
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {
                self.pull(
                    reference,
                    repository,
                    digest.or(tag).unwrap_or("latest"),
                    ui,
                )
                .await?;
                fetched = true;
                self.docker
                    .inspect_image(&lookup)
                    .await
                    .map_err(self.api(format!("inspect pulled image {lookup}")))?
            }
            Err(e) => return Err(self.api(format!("inspect image {lookup}"))(e)),
        };
        let repo_digests = inspect.repo_digests.clone().unwrap_or_default();
        let resolved = match digest {
            Some(d) => {
                let want = format!("@{d}");
                if !repo_digests.iter().any(|r| r.ends_with(&want)) {
                    return Err(EngineError::DigestMismatch {
                        reference: reference.to_owned(),
                        expected: d.to_owned(),
                        got: repo_digests.join(", "),
                    });
                }
                d.to_owned()
            }
            None => repo_digests
                .iter()
                .find(|r| r.starts_with(&format!("{repository}@")))
                .or(repo_digests.first())
                .and_then(|r| r.split_once('@').map(|(_, d)| d.to_owned()))
                .unwrap_or_else(|| inspect.id.clone().unwrap_or_default()),
        };
        Ok(ResolvedBase {
            kind: "image",
            reference: reference.to_owned(),
            digest: resolved,
            image_id: inspect.id.unwrap_or_default(),
            image: lookup,
            fetched,
        })
    }

    async fn pull(
        &self,
        reference: &str,
        repository: &str,
        tag_or_digest: &str,
        ui: &Ui,
    ) -> Result<(), EngineError> {
        ui.info(format!("pulling {reference}"));
        // For a digest, `tag=sha256:…` is how the engine's API takes it (as the docker CLI sends it).
        let opts = CreateImageOptionsBuilder::default()
            .from_image(repository)
            .tag(tag_or_digest)
            .build();
        let mut stream = self.docker.create_image(Some(opts), None, None);
        let progress = ui.bytes("pull", None);
        let mut layers: std::collections::HashMap<String, u64> = Default::default();
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let (Some(id), Some(detail)) =
                        (info.id.as_ref(), info.progress_detail.as_ref())
                        && let Some(cur) = detail.current
                    {
                        layers.insert(id.clone(), cur.max(0) as u64);
                        progress.set(layers.values().sum());
                    }
                }
                Err(e) if is_connection_error(&e) => {
                    progress.finish();
                    return Err(self.api(format!("pull {reference}"))(e));
                }
                Err(e) => {
                    progress.finish();
                    return Err(EngineError::NotPullable {
                        reference: reference.to_owned(),
                        cause: engine_message(&e),
                    });
                }
            }
        }
        progress.finish();
        Ok(())
    }

    /// Imports a rootfs tarball (`docker import`, i.e. `POST /images/create?fromSrc=-`) unless an
    /// image of the same content is already there. The tag carries the tarball's sha256, so the
    /// content decides, not the file name. Builds of the same base take turns (a lock in
    /// `lock_dir`): two imports at once would leave the engine a second, untagged copy.
    pub async fn ensure_rootfs(
        &self,
        name: &str,
        path: &Path,
        display: &str,
        expected_sha256: Option<&str>,
        lock_dir: &Path,
        ui: &Ui,
    ) -> Result<ResolvedBase, EngineError> {
        let rootfs_err = |cause: String, fix: &str| EngineError::Rootfs {
            path: display.to_owned(),
            cause,
            fix: fix.to_owned(),
        };
        let meta = tokio::fs::metadata(path).await.map_err(|e| {
            rootfs_err(
                e.to_string(),
                "build it first (for debian-12: `make base.debian-12`) or fix base.rootfs in the definition",
            )
        })?;
        if !meta.is_file() {
            return Err(rootfs_err(
                "not a regular file".into(),
                "point base.rootfs at a tarball",
            ));
        }
        let sha = hash_file(path, ui.bytes("verify", Some(meta.len())))
            .await
            .map_err(|e| rootfs_err(e.to_string(), "check the file's permissions"))?;
        if let Some(expected) = expected_sha256
            && expected != sha
        {
            return Err(EngineError::RootfsMismatch {
                path: display.to_owned(),
                expected: expected.to_owned(),
                got: sha,
            });
        }
        let repo = format!("lxcforge-base/{}", name.to_ascii_lowercase());
        let image = format!("{repo}:{sha}");
        let _turn = ImportLock::acquire(
            lock_dir,
            &format!("{}-{sha}", name.to_ascii_lowercase()),
            ui,
        )
        .await
        .map_err(|e| EngineError::Rootfs {
            path: lock_dir.display().to_string(),
            cause: format!("cannot take the import lock: {e}"),
            fix: "check that the project's .lxcforge directory is writable".into(),
        })?;
        let mut fetched = false;
        let inspect = match self.docker.inspect_image(&image).await {
            Ok(i) => {
                ui.info(format!(
                    "rootfs sha256:{} already imported as {repo}",
                    &sha[..12]
                ));
                i
            }
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {
                ui.info(format!(
                    "importing {display} ({})",
                    crate::ui::human_bytes(meta.len())
                ));
                let file = tokio::fs::File::open(path)
                    .await
                    .map_err(|e| rootfs_err(e.to_string(), "check the file's permissions"))?;
                let progress = ui.bytes("import", Some(meta.len()));
                let p2 = progress.clone();
                let body = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024)
                    .inspect_ok(move |b| p2.inc(b.len() as u64));
                let opts = CreateImageOptionsBuilder::default()
                    .from_src("-")
                    .repo(&repo)
                    .tag(&sha)
                    .changes(vec![
                        format!("LABEL org.lxcforge.rootfs-sha256={sha}"),
                        "CMD [\"/bin/sh\"]".to_owned(),
                    ])
                    .build();
                let mut stream = self.docker.create_image(
                    Some(opts),
                    Some(bollard::body_try_stream(body)),
                    None,
                );
                while let Some(item) = stream.next().await {
                    if let Err(e) = item {
                        progress.finish();
                        if is_connection_error(&e) {
                            return Err(self.api(format!("import {display}"))(e));
                        }
                        return Err(rootfs_err(
                            format!("the engine could not import it: {}", engine_message(&e)),
                            "make sure it is a tar archive of a root filesystem (optionally gzip/xz/bzip2-compressed)",
                        ));
                    }
                }
                progress.finish();
                fetched = true;
                self.docker
                    .inspect_image(&image)
                    .await
                    .map_err(self.api(format!("inspect imported image {image}")))?
            }
            Err(e) => return Err(self.api(format!("inspect image {image}"))(e)),
        };
        Ok(ResolvedBase {
            kind: "rootfs",
            reference: display.to_owned(),
            digest: format!("sha256:{sha}"),
            image_id: inspect.id.unwrap_or_default(),
            image,
            fetched,
        })
    }

    /// Creates and starts the build container. Its main process only keeps it alive; the work
    /// happens in execs. No mounts: everything goes in and out through the API.
    pub async fn create_container(
        &self,
        image: &str,
        name: &str,
        build_id: &str,
        project: &str,
    ) -> Result<String, EngineError> {
        let body = ContainerCreateBody {
            image: Some(image.to_owned()),
            entrypoint: Some(vec![
                "/bin/sh".into(),
                "-c".into(),
                "trap 'exit 0' TERM INT; while :; do sleep 86400 & wait $!; done".into(),
            ]),
            cmd: Some(vec![]),
            labels: Some(
                [
                    (LABEL.to_owned(), build_id.to_owned()),
                    (PROJECT_LABEL.to_owned(), project.to_owned()),
                ]
                .into_iter()
                .chain(crate::gc::Owner::current().map(|o| (OWNER_LABEL.to_owned(), o.label())))
                .collect(),
            ),
            host_config: Some(HostConfig {
                init: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        };
        let opts = CreateContainerOptionsBuilder::default().name(name).build();
        let created = self
            .docker
            .create_container(Some(opts), body)
            .await
            .map_err(self.api(format!("create the build container from {image}")))?;
        Ok(created.id)
    }

    pub async fn start_container(&self, id: &str) -> Result<(), EngineError> {
        self.docker
            .start_container(id, None::<bollard::query_parameters::StartContainerOptions>)
            .await
            .map_err(self.api("start the build container"))
    }

    /// Force-removes a container and its anonymous volumes.
    pub async fn remove_container(&self, id: &str) -> Result<(), EngineError> {
        let opts = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        match self.docker.remove_container(id, Some(opts)).await {
            Ok(())
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(e) => Err(self.api(format!("remove container {id}"))(e)),
        }
    }

    /// Copies the scripts into `SCRIPT_DIR/<stage>/<NN>-<name>` through the archive API.
    /// Returns the in-container path of each script, in run order.
    pub async fn upload_scripts(
        &self,
        id: &str,
        scripts: &[&Script],
    ) -> Result<Vec<String>, EngineError> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut paths = Vec::new();
        let dir = SCRIPT_DIR.trim_start_matches('/');
        let add_dir = |b: &mut tar::Builder<Vec<u8>>, p: &str| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o700);
            h.set_uid(0);
            h.set_gid(0);
            h.set_size(0);
            h.set_mtime(0);
            b.append_data(&mut h, p, std::io::empty())
        };
        let io_err = |e: std::io::Error| EngineError::Rootfs {
            path: "scripts".into(),
            cause: e.to_string(),
            fix: "check the scripts are readable".into(),
        };
        add_dir(&mut builder, dir).map_err(io_err)?;
        add_dir(&mut builder, &format!("{dir}/provision")).map_err(io_err)?;
        add_dir(&mut builder, &format!("{dir}/cleanup")).map_err(io_err)?;
        for (i, s) in scripts.iter().enumerate() {
            let data = std::fs::read(&s.abs).map_err(io_err)?;
            let rel = format!("{dir}/{}/{:02}-{}", s.stage, i + 1, s.file_name());
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o755);
            h.set_uid(0);
            h.set_gid(0);
            h.set_size(data.len() as u64);
            h.set_mtime(0);
            builder
                .append_data(&mut h, &rel, data.as_slice())
                .map_err(io_err)?;
            paths.push(format!("/{rel}"));
        }
        let tar = builder.into_inner().map_err(io_err)?;
        let opts = UploadToContainerOptionsBuilder::default().path("/").build();
        self.docker
            .upload_to_container(id, Some(opts), bollard::body_full(Bytes::from(tar)))
            .await
            .map_err(self.api("copy the scripts into the build container"))?;
        Ok(paths)
    }

    /// Runs a command in the container as root, streaming its output line by line through
    /// `on_line`. Returns the exit code and the last lines; `timeout` bounds the whole run.
    pub async fn exec(
        &self,
        id: &str,
        cmd: Vec<String>,
        env: &[String],
        timeout: Option<Duration>,
        mut on_line: impl FnMut(&str),
    ) -> Result<ExecOutcome, EngineError> {
        let opts = CreateExecOptions {
            cmd: Some(cmd.clone()),
            env: Some(env.to_vec()),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            // stdin is never attached: the exec stream would not close (bollard#374).
            attach_stdin: Some(false),
            tty: Some(false),
            user: Some("root".to_owned()),
            working_dir: Some("/".to_owned()),
            ..Default::default()
        };
        let what = cmd.join(" ");
        let exec = self
            .docker
            .create_exec(id, opts)
            .await
            .map_err(self.api(format!("create exec `{what}`")))?;
        let started = self
            .docker
            .start_exec(&exec.id, None)
            .await
            .map_err(self.api(format!("start `{what}`")))?;
        let StartExecResults::Attached { mut output, .. } = started else {
            return Err(EngineError::Api {
                action: format!("attach to `{what}`"),
                cause: "exec started detached".into(),
            });
        };
        let mut tail = Tail::default();
        let mut out_buf = LineBuf::default();
        let mut err_buf = LineBuf::default();
        let pump = async {
            while let Some(chunk) = output.next().await {
                let chunk = chunk.map_err(self.api(format!("read output of `{what}`")))?;
                use bollard::container::LogOutput;
                let (buf, bytes) = match chunk {
                    LogOutput::StdErr { message } => (&mut err_buf, message),
                    LogOutput::StdOut { message } | LogOutput::Console { message } => {
                        (&mut out_buf, message)
                    }
                    LogOutput::StdIn { .. } => continue,
                };
                buf.push(&bytes, |l| {
                    on_line(l);
                    tail.push(l);
                });
            }
            Ok::<(), EngineError>(())
        };
        let timed_out = match timeout {
            Some(t) => match tokio::time::timeout(t, pump).await {
                Ok(r) => {
                    r?;
                    false
                }
                Err(_) => true,
            },
            None => {
                pump.await?;
                false
            }
        };
        for buf in [&mut out_buf, &mut err_buf] {
            buf.flush(|l| {
                on_line(l);
                tail.push(l);
            });
        }
        if timed_out {
            return Ok(ExecOutcome {
                code: None,
                tail: tail.into_vec(),
            });
        }
        // The stream ends when the process's output closes; its exit code follows shortly.
        // A stream that ends while the process still runs was cut (the engine restarted, or
        // the connection broke): that is no exit code, and the build cannot go on.
        for _ in 0..100 {
            let info = self
                .docker
                .inspect_exec(&exec.id)
                .await
                .map_err(self.api(format!("inspect `{what}`")))?;
            if info.running != Some(true) {
                return Ok(ExecOutcome {
                    code: Some(info.exit_code.unwrap_or(-1)),
                    tail: tail.into_vec(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(EngineError::Lost {
            endpoint: self.endpoint.clone(),
            action: format!("read the output of `{what}`"),
            cause: "the output stream ended while the command was still running".into(),
        })
    }

    /// Runs one script; the first failure stops the build with its name, code and last lines.
    pub async fn run_script(
        &self,
        id: &str,
        path_in_container: &str,
        label: &str,
        env: &[String],
        timeout: Option<Duration>,
        ui: &Ui,
    ) -> Result<(), EngineError> {
        let outcome = self
            .exec(id, vec![path_in_container.to_owned()], env, timeout, |l| {
                ui.script_line(label, l)
            })
            .await
            .map_err(|e| e.during(&format!("run script {label}")))?;
        match outcome.code {
            Some(0) => Ok(()),
            Some(code) => Err(EngineError::ScriptFailed {
                script: label.to_owned(),
                code,
                tail: outcome.tail,
            }),
            None => Err(EngineError::ScriptTimeout {
                script: label.to_owned(),
                timeout: timeout.unwrap_or_default(),
                tail: outcome.tail,
            }),
        }
    }

    /// Runs a command and collects its stdout (bounded), for small queries like dpkg-query.
    pub async fn capture(&self, id: &str, cmd: &[&str]) -> Result<(i64, Vec<String>), EngineError> {
        let mut lines = Vec::new();
        let outcome = self
            .exec(
                id,
                cmd.iter().map(|s| s.to_string()).collect(),
                &[],
                Some(Duration::from_secs(120)),
                |l| {
                    if lines.len() < 200_000 {
                        lines.push(l.to_owned())
                    }
                },
            )
            .await?;
        Ok((outcome.code.unwrap_or(-1), lines))
    }

    /// The container's filesystem as the engine's raw tar stream.
    pub fn export(
        &self,
        id: &str,
    ) -> impl Stream<Item = std::io::Result<Bytes>> + Send + Unpin + 'static {
        self.docker
            .export_container(id)
            .map_err(std::io::Error::other)
    }

    /// Every container carrying lxcforge's build label, whoever made it (for `gc`).
    pub async fn build_containers(&self) -> Result<Vec<BuildContainer>, EngineError> {
        let opts = bollard::query_parameters::ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&[("label".to_owned(), vec![LABEL.to_owned()])].into())
            .build();
        let list = self
            .docker
            .list_containers(Some(opts))
            .await
            .map_err(self.api("list the build containers"))?;
        Ok(list
            .into_iter()
            .filter_map(|c| {
                let id = c.id?;
                let name = c
                    .names
                    .and_then(|n| n.into_iter().next())
                    .map(|n| n.trim_start_matches('/').to_owned())
                    .unwrap_or_else(|| id.clone());
                let mut labels = c.labels.unwrap_or_default();
                Some(BuildContainer {
                    id,
                    name,
                    owner: labels.remove(OWNER_LABEL),
                    project: labels.remove(PROJECT_LABEL),
                    created: c.created.unwrap_or(0),
                })
            })
            .collect())
    }
}

/// A build container as `gc` sees it.
#[derive(Debug, Clone)]
pub struct BuildContainer {
    pub id: String,
    pub name: String,
    /// The `org.lxcforge.owner` label: which process made it (see `gc::Owner`).
    pub owner: Option<String>,
    /// The `org.lxcforge.project` label.
    pub project: Option<String>,
    /// Unix seconds.
    pub created: i64,
}

#[derive(Debug)]
pub struct ExecOutcome {
    /// None when the timeout expired.
    pub code: Option<i64>,
    pub tail: Vec<String>,
}

/// The engine's own words for an error, without bollard's wrapping.
fn engine_message(e: &bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerResponseServerError {
            message,
            status_code,
        } => {
            format!("{} (HTTP {status_code})", message.trim())
        }
        bollard::errors::Error::DockerStreamError { error } => error.trim().to_owned(),
        other => cause_chain(other),
    }
}

async fn hash_file(path: &Path, progress: Progress) -> std::io::Result<String> {
    let mut f = tokio::fs::File::open(path).await?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        progress.inc(n as u64);
    }
    progress.finish();
    Ok(hex::encode(h.finalize()))
}

/// Splits a byte stream into lines, lossily decoding non-UTF-8 and cutting very long lines.
#[derive(Default)]
struct LineBuf(Vec<u8>);

impl LineBuf {
    fn push(&mut self, bytes: &[u8], mut emit: impl FnMut(&str)) {
        for &b in bytes {
            if b == b'\n' {
                self.flush(&mut emit);
            } else {
                self.0.push(b);
                if self.0.len() >= MAX_LINE {
                    self.flush(&mut emit);
                }
            }
        }
    }

    fn flush(&mut self, mut emit: impl FnMut(&str)) {
        if self.0.is_empty() {
            return;
        }
        let line = String::from_utf8_lossy(&self.0);
        emit(line.trim_end_matches('\r'));
        self.0.clear();
    }
}

#[derive(Default)]
struct Tail(VecDeque<String>);

impl Tail {
    fn push(&mut self, l: &str) {
        if self.0.len() == TAIL_LINES {
            self.0.pop_front();
        }
        self.0.push_back(l.to_owned());
    }
    fn into_vec(self) -> Vec<String> {
        self.0.into()
    }
}

/// An exclusive `flock` on `<dir>/import-<key>.lock`, held while alive. The kernel releases it
/// when the process ends, however it ends, so a killed build never leaves it taken.
struct ImportLock(#[allow(dead_code)] std::fs::File);

impl ImportLock {
    async fn acquire(dir: &Path, key: &str, ui: &Ui) -> std::io::Result<ImportLock> {
        std::fs::create_dir_all(dir)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(format!("import-{key}.lock")))?;
        let mut said = false;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(ImportLock(file)),
                Err(std::fs::TryLockError::WouldBlock) => {
                    if !said {
                        ui.info("waiting for another build that is importing the same base");
                        said = true;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(e),
            }
        }
    }
}

/// Where builds of a project take turns (import locks).
pub fn lock_dir(root: &Path) -> PathBuf {
    root.join(".lxcforge").join("locks")
}

/// A unique, readable container name for one build.
pub fn container_name(image: &str, build_id: &str) -> String {
    format!("lxcforge-{}-{build_id}", image.to_ascii_lowercase())
}

/// The engine's home for caches of downloads.
pub fn cache_dir(root: &Path) -> PathBuf {
    root.join(".lxcforge").join("cache")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_decode_and_cut() {
        let mut b = LineBuf::default();
        let mut got = Vec::new();
        b.push(b"one\ntw", |l| got.push(l.to_owned()));
        b.push(b"o\r\n\xff\xfe bad\n", |l| got.push(l.to_owned()));
        b.push(&vec![b'x'; MAX_LINE + 5], |l| got.push(l.to_owned()));
        b.flush(|l| got.push(l.to_owned()));
        assert_eq!(got[0], "one");
        assert_eq!(got[1], "two");
        assert_eq!(got[2], "\u{fffd}\u{fffd} bad");
        assert_eq!(got[3].len(), MAX_LINE);
        assert_eq!(got[4], "xxxxx");
    }

    #[test]
    fn tail_keeps_last_lines() {
        let mut t = Tail::default();
        for i in 0..50 {
            t.push(&i.to_string());
        }
        let v = t.into_vec();
        assert_eq!(v.len(), TAIL_LINES);
        assert_eq!(v.last().unwrap(), "49");
        assert_eq!(v[0], "30");
    }
}
