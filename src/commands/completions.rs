//! `simgate completions SHELL` (a completion script for bash, zsh, fish, elvish or PowerShell on
//! stdout) and the hidden `simgate man DIR` (one roff page per command, as the .deb ships them
//! from `man/`). Both take the clap command tree from the binary, which owns the CLI's types.

use std::path::PathBuf;
use std::process::ExitCode;

/// `simgate completions`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Install, for example:
  bash: simgate completions bash > ~/.local/share/bash-completion/completions/simgate
  zsh:  simgate completions zsh > ~/.zfunc/_simgate   (with fpath+=(~/.zfunc) before compinit)
  fish: simgate completions fish > ~/.config/fish/completions/simgate.fish")]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_name = "SHELL")]
    pub shell: clap_complete::Shell,
}

/// `simgate man`.
#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Where to write the pages (created if missing; existing pages are replaced).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

/// Prints the completion script for `cmd`.
pub fn run_completions(args: CompletionsArgs, mut cmd: clap::Command) -> ExitCode {
    clap_complete::generate(args.shell, &mut cmd, "simgate", &mut std::io::stdout());
    ExitCode::SUCCESS
}

/// Writes `simgate.1` and one `simgate-<command>.1` per visible subcommand into the directory.
pub fn run_man(args: ManArgs, cmd: clap::Command, json: bool) -> ExitCode {
    let mut cmd = cmd.disable_help_subcommand(true);
    // Fills in every subcommand's full name (`simgate otp send`) for the pages' synopses.
    cmd.build();
    let source = format!("simgate {}", env!("CARGO_PKG_VERSION"));
    let written = std::fs::create_dir_all(&args.dir)
        .and_then(|()| write_pages(cmd, &args.dir, &source))
        .and_then(|()| {
            let mut pages: Vec<String> = std::fs::read_dir(&args.dir)?
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".1"))
                .collect();
            pages.sort();
            Ok(pages)
        });
    match written {
        Ok(pages) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"dir": args.dir.display().to_string(), "pages": pages})
                );
            } else {
                println!("wrote {} pages to {}", pages.len(), args.dir.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "simgate: cannot write man pages to {}: {e}",
                args.dir.display()
            );
            ExitCode::from(1)
        }
    }
}

/// One page for `cmd` and one per visible subcommand, all footed with `source`: the version
/// of simgate, also on the subcommands' pages (clap would name only the subcommand there).
fn write_pages(cmd: clap::Command, dir: &std::path::Path, source: &str) -> std::io::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub.clone(), dir, source)?;
    }
    clap_mangen::Man::new(cmd)
        .source(source)
        .manual("simgate manual")
        .generate_to(dir)
        .map(|_| ())
}
