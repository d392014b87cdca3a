//! The runner's progress bars: one per task, shown together while tasks advance in turn, and
//! only on an interactive terminal. Nothing here touches the run folder.

use std::io::IsTerminal;

/// Per task: model calls made in this attempt (warm-up is per attempt: a resumed run is cold
/// again) and its progress bar.
pub(super) struct TaskProgress {
    pub calls: usize,
    pub bar: indicatif::ProgressBar,
}

/// A [`TaskProgress`] per `(task name, pending items)`, bars shown when `enabled` and stderr
/// is a terminal outside CI.
pub(super) fn task_progress<'a>(
    enabled: bool,
    tasks: impl IntoIterator<Item = (&'a str, usize)>,
) -> Vec<TaskProgress> {
    let bars = progress_bars(enabled);
    tasks
        .into_iter()
        .map(|(name, pending)| TaskProgress {
            calls: 0,
            bar: add_bar(bars.as_ref(), pending as u64, name),
        })
        .collect()
}

/// One progress bar per task, shown together (tasks advance in turn); `None` when quiet.
fn progress_bars(enabled: bool) -> Option<indicatif::MultiProgress> {
    // Quiet in CI logs and pipes; bars only on an interactive terminal.
    if !enabled || !std::io::stderr().is_terminal() || std::env::var_os("CI").is_some() {
        return None;
    }
    Some(indicatif::MultiProgress::new())
}

fn add_bar(
    bars: Option<&indicatif::MultiProgress>,
    len: u64,
    task: &str,
) -> indicatif::ProgressBar {
    let Some(bars) = bars else {
        return indicatif::ProgressBar::hidden();
    };
    let bar = bars.add(indicatif::ProgressBar::new(len));
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} {bar:30} {pos}/{len} items  {per_sec}  ETA {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_prefix(task.to_string());
    bar
}
