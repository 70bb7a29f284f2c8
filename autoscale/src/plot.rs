//! PNG line charts in a grid of panels, drawn with plotters' bitmap backend. Text uses the
//! DejaVu Sans bytes compiled into the binary, so no system font is looked up.

use std::path::Path;
use std::sync::Once;

use anyhow::{anyhow, Result};
use plotters::prelude::*;

/// One line of a panel.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub color: RGBColor,
}

/// One chart: lines over a shared x axis, an optional vertical marker (the knee) and an
/// optional horizontal one (a target or SLO).
pub struct Panel {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    pub vline: Option<(f64, String)>,
    pub hline: Option<(f64, String)>,
}

/// Colours that stay apart in print and for common colour blindness (Okabe-Ito).
pub const PALETTE: &[RGBColor] = &[
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 0, 0),
    RGBColor(240, 228, 66),
];

static FONT: Once = Once::new();

fn register_font() {
    FONT.call_once(|| {
        // The bytes are a valid TrueType font compiled in; failure would be a build error.
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            dejavu::sans::regular(),
        );
    });
}

/// Draws `panels` into a PNG of `cols` columns, each panel `panel_size` pixels.
pub fn draw(path: &Path, panels: &[Panel], cols: usize, panel_size: (u32, u32)) -> Result<()> {
    register_font();
    let rows = panels.len().div_ceil(cols.max(1));
    let size = (panel_size.0 * cols as u32, panel_size.1 * rows as u32);
    let mut pixels = vec![0u8; size.0 as usize * size.1 as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, size).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let areas = root.split_evenly((rows, cols));
        for (panel, area) in panels.iter().zip(areas.iter()) {
            draw_panel(panel, area)?;
        }
        root.present().map_err(plot_error)?;
    }
    write_png(path, &pixels, size)
}

/// Encodes RGB pixels as a PNG with the best compression: charts are mostly flat colour.
fn write_png(path: &Path, pixels: &[u8], (width, height): (u32, u32)) -> Result<()> {
    use image::codecs::png::{CompressionType, FilterType, PngEncoder};
    use image::ImageEncoder;
    let file = std::fs::File::create(path)?;
    let encoder = PngEncoder::new_with_quality(
        std::io::BufWriter::new(file),
        CompressionType::Best,
        FilterType::Adaptive,
    );
    encoder.write_image(pixels, width, height, image::ColorType::Rgb8)?;
    Ok(())
}

fn draw_panel(
    panel: &Panel,
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
) -> Result<()> {
    let (x_range, y_range) = ranges(panel);
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(x_range.clone(), y_range.clone())
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc(&panel.x_label)
        .y_desc(&panel.y_label)
        .label_style(("sans-serif", 13))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(plot_error)?;
    for s in &panel.series {
        let color = s.color;
        // Wide polylines join with miters, which spike at the sharp turns of a dense series.
        let width = if s.points.len() > 200 { 1 } else { 2 };
        chart
            .draw_series(LineSeries::new(
                s.points.iter().copied(),
                color.stroke_width(width),
            ))
            .map_err(plot_error)?
            .label(&s.name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], color.stroke_width(2)));
    }
    if let Some((x, label)) = &panel.vline {
        let style = RGBColor(120, 120, 120).stroke_width(1);
        chart
            .draw_series(LineSeries::new(
                [(*x, y_range.start), (*x, y_range.end)],
                style,
            ))
            .map_err(plot_error)?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], style));
    }
    if let Some((y, label)) = &panel.hline {
        let style = RGBColor(200, 0, 0).stroke_width(1);
        chart
            .draw_series(LineSeries::new(
                [(x_range.start, *y), (x_range.end, *y)],
                style,
            ))
            .map_err(plot_error)?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], style));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(200, 200, 200))
        .label_font(("sans-serif", 13))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(plot_error)?;
    Ok(())
}

/// Axis ranges covering every finite point and marker, starting at zero.
fn ranges(panel: &Panel) -> (std::ops::Range<f64>, std::ops::Range<f64>) {
    let points = panel.series.iter().flat_map(|s| s.points.iter());
    let finite: Vec<(f64, f64)> = points
        .copied()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    let mut x_max = finite.iter().map(|p| p.0).fold(0.0, f64::max);
    let mut y_max = finite.iter().map(|p| p.1).fold(0.0, f64::max);
    if let Some((x, _)) = panel.vline {
        x_max = x_max.max(x);
    }
    if let Some((y, _)) = panel.hline {
        y_max = y_max.max(y);
    }
    let x_min = finite.iter().map(|p| p.0).fold(x_max, f64::min).min(0.0);
    (x_min..x_max.max(1e-9) * 1.02, 0.0..y_max.max(1e-9) * 1.1)
}

fn plot_error<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("plotting failed: {e:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_a_png_with_text_and_no_system_fonts() {
        let path = std::env::temp_dir().join(format!("wick-plot-{}.png", std::process::id()));
        let panel = Panel {
            title: "test".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            series: vec![Series {
                name: "line".into(),
                points: vec![(0.0, 1.0), (1.0, 3.0), (2.0, f64::NAN)],
                color: PALETTE[0],
            }],
            vline: Some((1.0, "knee".into())),
            hline: Some((2.0, "target".into())),
        };
        draw(&path, &[panel], 1, (320, 240)).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!(&bytes[1..4], b"PNG");
        assert!(bytes.len() > 1000);
    }
}
