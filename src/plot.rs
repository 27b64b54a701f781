//! Small PNG line plots (plotters, bitmap backend), written atomically.
//!
//! Text needs a TrueType font, read at run time: `$NTK_PLOT_FONT`, else DejaVu Sans or
//! Liberation Sans from the usual system folders. Without one, the plot is drawn without
//! titles and tick labels (and a note says so on stderr).

use anyhow::{Context, Result, anyhow};
use plotters::prelude::*;
use std::path::Path;
use std::sync::OnceLock;

/// One line of a panel.
#[derive(Debug, Clone)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    /// Error bars: `±y_err[i]` at point `i` (empty: none).
    pub y_err: Vec<f64>,
}

/// One chart.
#[derive(Debug, Clone)]
pub struct Panel {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    /// Logarithmic axes (ticks labelled in the data's own values); non-positive values
    /// are left out on a log axis.
    pub log_x: bool,
    pub log_y: bool,
}

const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// Registers a system font for plotters' text once; false when none was found.
fn font_available() -> bool {
    static FONT: OnceLock<bool> = OnceLock::new();
    *FONT.get_or_init(|| {
        let mut candidates: Vec<std::path::PathBuf> = Vec::new();
        if let Some(p) = std::env::var_os("NTK_PLOT_FONT") {
            candidates.push(p.into());
        }
        for p in [
            "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/TTF/DejaVuSans.ttf",
            "/usr/share/fonts/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
            "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
            "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
            "/Library/Fonts/Arial.ttf",
            "/System/Library/Fonts/Supplemental/Arial.ttf",
            "C:\\Windows\\Fonts\\arial.ttf",
        ] {
            candidates.push(p.into());
        }
        for p in candidates {
            if let Ok(bytes) = std::fs::read(&p) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        eprintln!(
            "note: no TrueType font found (set NTK_PLOT_FONT=/path/to/font.ttf); plots are drawn without text"
        );
        false
    })
}

/// Whether a point can be drawn on the panel's axes (finite; positive on a log axis).
fn drawable(panel: &Panel, (x, y): (f64, f64)) -> bool {
    x.is_finite() && y.is_finite() && (!panel.log_x || x > 0.0) && (!panel.log_y || y > 0.0)
}

/// The axis ranges: the data (with its error bars) and a 5 % margin; on a log axis the
/// margin is a factor; a single value gets a range around it.
fn bounds(panel: &Panel) -> ((f64, f64), (f64, f64)) {
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for s in &panel.series {
        for (i, &p) in s.points.iter().enumerate() {
            if !drawable(panel, p) {
                continue;
            }
            let e = s
                .y_err
                .get(i)
                .copied()
                .filter(|e| e.is_finite() && *e > 0.0);
            let lo = e.map_or(p.1, |e| p.1 - e);
            let lo = if panel.log_y && lo <= 0.0 { p.1 } else { lo };
            let hi = e.map_or(p.1, |e| p.1 + e);
            x0 = x0.min(p.0);
            x1 = x1.max(p.0);
            y0 = y0.min(lo);
            y1 = y1.max(hi);
        }
    }
    if x0 > x1 {
        return ((1.0, 10.0), (1.0, 10.0));
    }
    let pad = |a: f64, b: f64, log: bool| {
        if log {
            let r = (b / a).ln();
            if r <= 1e-9 {
                return (a / 2.0, b * 2.0);
            }
            let f = (0.05 * r).exp();
            return (a / f, b * f);
        }
        let d = (b - a).abs();
        if d <= 1e-9 * a.abs().max(b.abs()).max(f64::MIN_POSITIVE) {
            // One value (a single width, a flat series): a range around it, so that the
            // ticks differ.
            let h = if a == 0.0 { 0.5 } else { 0.1 * a.abs() };
            return (a - h, b + h);
        }
        (a - 0.05 * d, b + 0.05 * d)
    };
    (pad(x0, x1, panel.log_x), pad(y0, y1, panel.log_y))
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    panel: &Panel,
    text: bool,
) -> std::result::Result<(), String> {
    let ((x0, x1), (y0, y1)) = bounds(panel);
    let mut builder = ChartBuilder::on(area);
    builder.margin(12);
    if text {
        builder
            .caption(&panel.title, ("sans-serif", 20))
            .x_label_area_size(40)
            .y_label_area_size(70);
    }
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    match (panel.log_x, panel.log_y) {
        (false, false) => {
            let chart = builder.build_cartesian_2d(x0..x1, y0..y1).map_err(e)?;
            draw_into(chart, panel, text)
        }
        (true, false) => {
            let chart = builder
                .build_cartesian_2d((x0..x1).log_scale(), y0..y1)
                .map_err(e)?;
            draw_into(chart, panel, text)
        }
        (false, true) => {
            let chart = builder
                .build_cartesian_2d(x0..x1, (y0..y1).log_scale())
                .map_err(e)?;
            draw_into(chart, panel, text)
        }
        (true, true) => {
            let chart = builder
                .build_cartesian_2d((x0..x1).log_scale(), (y0..y1).log_scale())
                .map_err(e)?;
            draw_into(chart, panel, text)
        }
    }
}

/// The mesh, the series (markers for short ones, error bars) and the legend, on linear or
/// log axes.
fn draw_into<'a, DB, X, Y>(
    mut chart: ChartContext<'a, DB, Cartesian2d<X, Y>>,
    panel: &Panel,
    text: bool,
) -> std::result::Result<(), String>
where
    DB: DrawingBackend + 'a,
    X: Ranged<ValueType = f64> + plotters::coord::ranged1d::ValueFormatter<f64>,
    Y: Ranged<ValueType = f64> + plotters::coord::ranged1d::ValueFormatter<f64>,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let whole_x = panel
        .series
        .iter()
        .all(|s| s.points.iter().all(|p| p.0.fract() == 0.0));
    if text {
        chart
            .configure_mesh()
            .x_desc(panel.x_label.as_str())
            .y_desc(panel.y_label.as_str())
            .x_label_formatter(&|v| {
                if panel.log_x {
                    log_tick(*v)
                } else if whole_x && (v - v.round()).abs() > 1e-9 * v.abs().max(1.0) {
                    // Epochs, indices: no "0.5" between whole numbers.
                    String::new()
                } else {
                    tick(*v)
                }
            })
            .y_label_formatter(&|v| if panel.log_y { log_tick(*v) } else { tick(*v) })
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(err)?;
    } else {
        // No font: a frame instead of the mesh (its labels would need text).
        let (x, y) = (chart.x_range(), chart.y_range());
        chart
            .plotting_area()
            .draw(&Rectangle::new(
                [(x.start, y.start), (x.end, y.end)],
                ShapeStyle::from(&BLACK).stroke_width(1),
            ))
            .map_err(err)?;
    }
    for (i, s) in panel.series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let pts: Vec<(usize, (f64, f64))> = s
            .points
            .iter()
            .copied()
            .enumerate()
            .filter(|(_, p)| drawable(panel, *p))
            .collect();
        // Few points: markers too, so a single point (or a short series) is visible.
        if pts.len() <= 50 {
            chart
                .draw_series(
                    pts.iter()
                        .map(|&(_, p)| Circle::new(p, 3, ShapeStyle::from(&color).filled())),
                )
                .map_err(err)?;
        }
        let bars: Vec<((f64, f64), (f64, f64))> = pts
            .iter()
            .filter_map(|&(j, (x, y))| {
                let e = s
                    .y_err
                    .get(j)
                    .copied()
                    .filter(|e| e.is_finite() && *e > 0.0)?;
                let lo = if panel.log_y && y - e <= 0.0 {
                    y
                } else {
                    y - e
                };
                Some(((x, lo), (x, y + e)))
            })
            .collect();
        chart
            .draw_series(
                bars.into_iter()
                    .map(|(a, b)| PathElement::new(vec![a, b], color.stroke_width(1))),
            )
            .map_err(err)?;
        let drawn = chart
            .draw_series(LineSeries::new(
                pts.into_iter().map(|(_, p)| p),
                ShapeStyle::from(&color).stroke_width(2),
            ))
            .map_err(err)?;
        if text {
            drawn.label(s.label.as_str()).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        }
    }
    if text && panel.series.len() > 1 {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 13))
            .draw()
            .map_err(err)?;
    }
    Ok(())
}

/// A tick label on a log axis: only at 1, 2 and 5 × 10^k (the other ticks of a decade
/// stay unlabelled, so that labels never overlap).
fn log_tick(v: f64) -> String {
    if !(v.is_finite() && v > 0.0) {
        return String::new();
    }
    let m = v / 10f64.powf(v.log10().floor());
    if [1.0, 2.0, 5.0, 10.0]
        .iter()
        .any(|t| (m - t).abs() <= 1e-6 * t)
    {
        tick(v)
    } else {
        String::new()
    }
}

/// A tick label: whole numbers from 1 up without a decimal point ("20", not "20.0"),
/// small or huge values in scientific notation ("1.5e-7"), others with four significant
/// digits and no trailing zeros.
fn tick(v: f64) -> String {
    let trim = |s: String| -> String {
        match s.split_once('e') {
            Some((m, e)) if m.contains('.') => {
                format!("{}e{e}", m.trim_end_matches('0').trim_end_matches('.'))
            }
            Some(_) => s,
            None if s.contains('.') => s.trim_end_matches('0').trim_end_matches('.').to_string(),
            None => s,
        }
    };
    let a = v.abs();
    // Below 1e-15: the rounding residue of a tick at zero (plotters steps in floats).
    if a < 1e-15 {
        "0".into()
    } else if (1.0..1e6).contains(&a) && (v - v.round()).abs() <= 1e-9 * a {
        format!("{}", v.round() as i64)
    } else if !(1e-3..1e6).contains(&a) {
        trim(format!("{v:.3e}"))
    } else {
        trim(format!(
            "{v:.*}",
            (3 - a.log10().floor() as i64).clamp(0, 12) as usize
        ))
    }
}

/// Draws `panels` side by side (`panel_size` pixels each) into a PNG at `path`, atomically.
pub fn write_png(path: &Path, panels: &[Panel], panel_size: (u32, u32)) -> Result<()> {
    if panels.is_empty() {
        return Err(anyhow!("nothing to plot"));
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = path
        .file_name()
        .ok_or_else(|| anyhow!("{}: not a file name", path.display()))?
        .to_string_lossy()
        .into_owned();
    let tmp = dir.join(format!(".{name}.tmp-{}.png", std::process::id()));
    let text = font_available();
    let size = (panel_size.0 * panels.len() as u32, panel_size.1);
    let result = (|| -> std::result::Result<(), String> {
        let root = BitMapBackend::new(&tmp, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let areas = root.split_evenly((1, panels.len()));
        for (area, panel) in areas.iter().zip(panels) {
            draw_panel(area, panel, text)?;
        }
        root.present().map_err(|e| e.to_string())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(anyhow!("{}: drawing the plot failed: {e}", path.display()));
    }
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_read_as_numbers() {
        assert_eq!(tick(20.0), "20");
        assert_eq!(tick(0.0), "0");
        assert_eq!(tick(-1.5), "-1.5");
        assert_eq!(tick(0.012345), "0.01235");
        assert_eq!(tick(1.5e-7), "1.5e-7");
        assert_eq!(tick(-1.11e-16), "0");
        assert_eq!(tick(3e-14), "3e-14");
    }

    #[test]
    fn a_single_value_gets_a_readable_range() {
        let panel = |pts: Vec<(f64, f64)>| Panel {
            log_x: false,
            log_y: false,
            title: String::new(),
            x_label: String::new(),
            y_label: String::new(),
            series: vec![Series {
                y_err: Vec::new(),
                label: "a".into(),
                points: pts,
            }],
        };
        let ((x0, x1), (y0, y1)) = bounds(&panel(vec![(0.9031, -0.27)]));
        assert!(
            (x0 - 0.81279).abs() < 1e-9 && (x1 - 0.99341).abs() < 1e-9,
            "{x0} {x1}"
        );
        assert!(y0 < -0.27 && y1 > -0.27 && y1 - y0 > 0.05, "{y0} {y1}");
        assert_eq!(log_tick(2000.0), "2000");
        assert_eq!(log_tick(0.05), "0.05");
        assert_eq!(log_tick(3000.0), "");
        assert_eq!(log_tick(0.0), "");
        let ((l0, l1), _) = bounds(&Panel {
            log_x: true,
            ..panel(vec![(64.0, 1.0), (1024.0, 2.0), (-1.0, 3.0)])
        });
        assert!(
            l0 < 64.0 && l0 > 50.0 && l1 > 1024.0 && l1 < 1300.0,
            "{l0} {l1}"
        );
        // Ticks at a tenth of the range read differently.
        assert_ne!(tick(x0 + 0.1 * (x1 - x0)), tick(x0 + 0.2 * (x1 - x0)));
        let ((z0, z1), _) = bounds(&panel(vec![(0.0, 1.0), (0.0, 2.0)]));
        assert_eq!((z0, z1), (-0.5, 0.5));
        // A real range keeps its 5 % margins.
        let ((a0, a1), _) = bounds(&panel(vec![(1.0, 1.0), (3.0, 2.0)]));
        assert!((a0 - 0.9).abs() < 1e-12 && (a1 - 3.1).abs() < 1e-12);
    }
}
