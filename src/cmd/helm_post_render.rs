//! `pennant helm-post-render --config FILE [--error-file FILE]`: the post-renderer plugin Helm 4
//! runs during a HelmRelease's install or upgrade (see `helm::postrender`). Reads the rendered
//! manifests on stdin, writes the post-rendered ones on stdout. Helm keeps a plugin's stderr to
//! itself, so a failure is also written to `--error-file` for the engine to report.

use std::io::{Read, Write};
use std::path::PathBuf;

use crate::helm::postrender::{self, PostRenderConfig};

#[derive(clap::Args, Debug)]
pub struct PostRenderArgs {
    /// The post-render configuration (JSON, written by the engine).
    #[arg(long)]
    pub config: PathBuf,
    /// Where to write the error, if any.
    #[arg(long)]
    pub error_file: Option<PathBuf>,
}

fn post_render(args: &PostRenderArgs) -> Result<String, String> {
    let text = std::fs::read(&args.config)
        .map_err(|e| format!("post-render config {}: {e}", args.config.display()))?;
    let config: PostRenderConfig =
        serde_json::from_slice(&text).map_err(|e| format!("post-render config: {e}"))?;
    let mut rendered = String::new();
    std::io::stdin()
        .read_to_string(&mut rendered)
        .map_err(|e| format!("reading the rendered manifests: {e}"))?;
    postrender::run(&rendered, &config).map_err(|e| e.to_string())
}

/// Run the post-renderer; on error, write it to `--error-file` and stderr and fail.
pub fn command(args: &PostRenderArgs) -> anyhow::Result<()> {
    match post_render(args) {
        Ok(out) => {
            std::io::stdout().write_all(out.as_bytes())?;
            Ok(())
        }
        Err(e) => {
            if let Some(f) = &args.error_file {
                let _ = std::fs::write(f, &e);
            }
            anyhow::bail!(e)
        }
    }
}
