//! Where credentials come from and what they are: password files, Docker `config.json` and its
//! credential helpers. Never printed: [`Secret`] hides them from `Debug`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use docker_credential::{CredentialRetrievalError, DockerCredential};

pub use crate::secret::Secret;

/// What a registry (or its token server) is given to prove who we are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// Nothing: anonymous pulls, or tokens without a login.
    None,
    /// User name and password: Basic auth, and Basic on token requests.
    Basic {
        /// The user name.
        username: String,
        /// The password.
        password: Secret,
    },
    /// A Docker identity token: an OAuth2 refresh token for the token server.
    IdentityToken(Secret),
}

impl Credentials {
    /// The `Authorization: Basic` value, when there is a user name and password.
    pub fn basic_header(&self) -> Option<String> {
        match self {
            Credentials::Basic { username, password } => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{username}:{}", password.expose()))
            )),
            _ => None,
        }
    }
}

/// Where credentials come from; resolved lazily, at the first challenge, since a credential
/// helper is a process to run and anonymous registries never need one.
#[derive(Debug, Clone)]
pub enum Source {
    /// Known up front (anonymous).
    Known(Credentials),
    /// `username` + `password_file`, re-read when credentials are resolved again (so a rotated
    /// password is picked up without a restart).
    PasswordFile {
        /// The user name.
        username: String,
        /// The file holding the password.
        path: PathBuf,
    },
    /// A Docker `config.json`; `server` is the key to look up (`host[:port]`, or
    /// `https://index.docker.io/v1/` for Docker Hub). `required` is false for the implicit
    /// `~/.docker/config.json` of registries missing from the configuration.
    DockerConfig {
        /// The file.
        path: PathBuf,
        /// The lookup key.
        server: String,
        /// Whether a missing file or entry is an error.
        required: bool,
    },
}

/// How long a credential helper may take.
const HELPER_TIMEOUT: Duration = Duration::from_secs(30);

impl Source {
    /// Reads the credentials; runs `docker-credential-<name> get` when the config says so.
    pub async fn resolve(&self) -> Result<Credentials, String> {
        match self {
            Source::Known(c) => Ok(c.clone()),
            Source::PasswordFile { username, path } => {
                crate::secret::read_async("password_file", path)
                    .await
                    .map(|password| Credentials::Basic {
                        username: username.clone(),
                        password,
                    })
                    .map_err(|e| e.to_string())
            }
            Source::DockerConfig {
                path,
                server,
                required,
            } => from_docker_config(path, server, *required).await,
        }
    }
}

/// The credentials `path` holds for `server`: read and syntax-checked here, looked up (maybe
/// through a helper) by the crate.
async fn from_docker_config(
    path: &Path,
    server: &str,
    required: bool,
) -> Result<Credentials, String> {
    let text = match tokio::fs::read(path).await {
        Ok(text) => text,
        Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Credentials::None)
        }
        Err(e) => return Err(format!("cannot read Docker config {}: {e}", path.display())),
    };
    // The crate hides JSON errors; check the syntax here to say where the file is wrong.
    if let Err(e) = serde_json::from_slice::<serde_json::Value>(&text) {
        return Err(format!(
            "Docker config {} is not valid JSON: {e}",
            path.display()
        ));
    }
    let found = lookup(text, server).await?;
    from_lookup(found, path, server, required)
}

/// Runs the crate's lookup off the runtime (a helper is a process), within [`HELPER_TIMEOUT`].
async fn lookup(
    text: Vec<u8>,
    server: &str,
) -> Result<Result<DockerCredential, CredentialRetrievalError>, String> {
    let key = server.to_string();
    let task = tokio::task::spawn_blocking(move || {
        docker_credential::get_credential_from_reader(&text[..], &key)
    });
    match tokio::time::timeout(HELPER_TIMEOUT, task).await {
        Ok(Ok(result)) => Ok(result),
        Ok(Err(e)) => Err(format!("credential lookup for {server} failed: {e}")),
        Err(_) => Err(format!(
            "credential helper for {server} did not answer within {}s",
            HELPER_TIMEOUT.as_secs()
        )),
    }
}

/// Our credentials from the crate's answer; a missing entry is [`Credentials::None`] unless
/// `required`.
fn from_lookup(
    found: Result<DockerCredential, CredentialRetrievalError>,
    path: &Path,
    server: &str,
    required: bool,
) -> Result<Credentials, String> {
    use CredentialRetrievalError as E;
    match found {
        Ok(DockerCredential::UsernamePassword(username, password)) => Ok(Credentials::Basic {
            username,
            password: Secret::new(password),
        }),
        Ok(DockerCredential::IdentityToken(token)) => {
            Ok(Credentials::IdentityToken(Secret::new(token)))
        }
        Err(E::NoCredentialConfigured) if !required => Ok(Credentials::None),
        Err(E::NoCredentialConfigured) => Err(format!(
            "Docker config {} has no credentials for {server}",
            path.display()
        )),
        // The crate's message would include the helper's stdout; keep only stderr's first
        // line, which is where helpers explain themselves.
        Err(E::HelperFailure { helper, stderr, .. }) => Err(format!(
            "credential helper {helper} failed for {server}: {}",
            stderr
                .lines()
                .next()
                .unwrap_or("")
                .chars()
                .take(200)
                .collect::<String>()
        )),
        Err(e) => Err(format!(
            "cannot get credentials for {server} from {}: {e}",
            path.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let c = Credentials::Basic {
            username: "u".into(),
            password: Secret::new("hunter2"),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        assert_eq!(c.basic_header().unwrap(), "Basic dTpodW50ZXIy");
    }

    #[tokio::test]
    async fn password_files_are_read_again_at_each_resolution() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        let source = Source::PasswordFile {
            username: "u".into(),
            path: path.clone(),
        };
        std::fs::write(&path, "one\n").unwrap();
        let first = source.resolve().await.unwrap();
        std::fs::write(&path, "two").unwrap();
        let second = source.resolve().await.unwrap();
        assert_eq!(first.basic_header().unwrap(), "Basic dTpvbmU=");
        assert_eq!(second.basic_header().unwrap(), "Basic dTp0d28=");
        std::fs::write(&path, "\n").unwrap();
        assert!(source.resolve().await.unwrap_err().contains("is empty"));
    }

    #[tokio::test]
    async fn docker_config_auths_and_missing_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"auths":{"https://reg.example:5000/v1/":{"auth":"dTpodW50ZXIy"},"tok.example":{"identitytoken":"rt"}}}"#,
        )
        .unwrap();
        let source = |server: &str, required| Source::DockerConfig {
            path: path.clone(),
            server: server.into(),
            required,
        };
        let c = source("reg.example:5000", true).resolve().await.unwrap();
        assert_eq!(c.basic_header().unwrap(), "Basic dTpodW50ZXIy");
        let c = source("tok.example", true).resolve().await.unwrap();
        assert_eq!(c, Credentials::IdentityToken(Secret::new("rt")));
        assert_eq!(
            source("other.example", false).resolve().await.unwrap(),
            Credentials::None
        );
        let e = source("other.example", true).resolve().await.unwrap_err();
        assert!(e.contains("no credentials for other.example"), "{e}");
        std::fs::write(&path, "{\"auths\": {").unwrap();
        let e = source("x", true).resolve().await.unwrap_err();
        assert!(e.contains("not valid JSON") && e.contains("line 1"), "{e}");
    }
}
