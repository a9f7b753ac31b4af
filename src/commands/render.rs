//! `devloop render`: the fully resolved manifests of a profile, as `up` would apply them.

use crate::cli::{GlobalArgs, OutputFormat, RenderArgs, TierChoice};
use crate::config::{self, Tier};
use crate::deploy::render::{PrintOptions, printable, to_yaml};
use crate::deploy::{self, RenderOptions};
use crate::error::Error;
use crate::output::Printer;

pub fn run(global: &GlobalArgs, args: &RenderArgs, printer: &Printer) -> Result<(), Error> {
    let project = config::load(&super::selection(global))?;
    let images = crate::build::image_tags(&project)?;
    let mut rendered = deploy::render(&project, &RenderOptions { images })?;
    for warning in &rendered.warnings {
        printer.warn(warning);
    }
    match args.tier {
        TierChoice::All => {}
        TierChoice::Infra => rendered.objects.retain(|o| o.tier == Tier::Persistent),
        TierChoice::App => rendered.objects.retain(|o| o.tier == Tier::Profile),
    }
    let print = PrintOptions {
        show_secrets: args.show_secrets,
    };
    let text = match args.output {
        OutputFormat::Yaml => to_yaml(&project, &rendered, print),
        OutputFormat::Json => {
            serde_json::to_string_pretty(&printable(&rendered, print)).expect("values serialize")
                + "\n"
        }
    };
    printer.data(&text);
    Ok(())
}
