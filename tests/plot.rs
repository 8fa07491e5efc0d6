//! Renders every chart type of `rnnlab::plot` with realistic data and checks the PNG files.
//!
//! Set `RNNLAB_PLOT_TEST_OUT=/some/dir` to keep the rendered charts there for a visual check;
//! otherwise they go to a temporary directory that is removed afterwards.

use std::path::{Path, PathBuf};

use rnnlab::plot::{
    Band, BandChart, Color, DEFAULT_SIZE, HLine, Heatmap, LegendPos, LineChart, Series,
    TWO_PANEL_SIZE, VLine, band_chart, heatmap, line_chart, palette, panel_line_chart,
    register_fonts, two_panel_line_chart,
};

/// Output directory: `RNNLAB_PLOT_TEST_OUT` if set, else a fresh temporary directory (kept
/// alive by the returned guard).
fn out_dir() -> (Option<tempfile::TempDir>, PathBuf) {
    match std::env::var_os("RNNLAB_PLOT_TEST_OUT") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            std::fs::create_dir_all(&dir).expect("create output dir");
            (None, dir)
        }
        None => {
            let tmp = tempfile::tempdir().expect("tempdir");
            let dir = tmp.path().to_path_buf();
            (Some(tmp), dir)
        }
    }
}

/// Checks that `path` is a PNG of the given size and not trivially small.
fn assert_png(path: &Path, size: (u32, u32)) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        bytes.len() > 10_000,
        "{} is only {} bytes",
        path.display(),
        bytes.len()
    );
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    assert_eq!(&bytes[12..16], b"IHDR", "first chunk is IHDR");
    let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    assert_eq!((width, height), size, "image size");
    assert_eq!(
        &bytes[bytes.len() - 8..bytes.len() - 4],
        b"IEND",
        "last chunk is IEND"
    );
}

fn rnn_decay() -> Vec<(f64, f64)> {
    // ~1e-1 at distance 0 down to ~1e-12 at distance 100, with a little wobble.
    (0..=100)
        .map(|k| {
            let k = f64::from(k);
            (
                k,
                0.1 * 10f64.powf(-0.11 * k) * (1.0 + 0.3 * (k * 0.7).sin()),
            )
        })
        .collect()
}

fn lstm_flat() -> Vec<(f64, f64)> {
    (0..=100)
        .map(|k| {
            let k = f64::from(k);
            (k, 1e-3 * (1.0 + 0.4 * (k * 0.3).sin()) * (1.0 - 0.003 * k))
        })
        .collect()
}

fn gradient_chart(title: &str) -> LineChart {
    LineChart {
        title: title.to_string(),
        subtitle: Some(
            "Norm of ∂L/∂h_t for a loss at the last step, as a function of distance back in time\n\
             median over 64 sequences, hidden size 32"
                .to_string(),
        ),
        x_label: "distance back in time (steps)".to_string(),
        y_label: "‖∂L/∂h_t‖".to_string(),
        log_y: true,
        series: vec![
            Series::new("RNN (tanh)", rnn_decay(), palette(0)),
            Series::new("LSTM", lstm_flat(), palette(1)),
            Series::new(
                "Pascanu bound (γ·‖W‖)^k",
                (0..=100)
                    .map(|k| (f64::from(k), 0.2 * 0.7f64.powi(k)))
                    .collect(),
                Color::BLACK,
            )
            .dashed(),
        ],
        ..LineChart::default()
    }
}

#[test]
fn font_registration_succeeds_and_is_idempotent() {
    register_fonts().expect("first registration");
    register_fonts().expect("second registration");
}

#[test]
fn log_line_chart_renders() {
    let (_guard, dir) = out_dir();
    let path = dir.join("gradient_vs_distance.png");
    line_chart(&path, &gradient_chart("Vanishing gradients: RNN vs LSTM")).expect("line chart");
    assert_png(&path, DEFAULT_SIZE);
}

#[test]
fn log_chart_with_zeros_nan_and_infinities_still_renders() {
    let (_guard, dir) = out_dir();
    let path = dir.join("log_with_bad_values.png");
    let mut points = rnn_decay();
    points[10].1 = 0.0;
    points[11].1 = f64::NAN;
    points[50].1 = -1e-5;
    points[60].1 = f64::INFINITY;
    points[70].0 = f64::NAN;
    // From step 90 on, the gradient underflows to exactly zero.
    for p in &mut points[90..] {
        p.1 = 0.0;
    }
    let chart = LineChart {
        title: "Gradient norm with underflow".to_string(),
        x_label: "distance".to_string(),
        y_label: "‖∂L/∂h_t‖".to_string(),
        log_y: true,
        series: vec![
            Series::new("RNN", points, palette(0)),
            Series::new("all zero", vec![(0.0, 0.0), (1.0, 0.0)], palette(2)),
        ],
        hlines: vec![
            HLine::new("f32 epsilon", f64::from(f32::EPSILON), Color::GREY),
            HLine::new("zero (not drawable)", 0.0, Color::GREY),
        ],
        ..LineChart::default()
    };
    line_chart(&path, &chart).expect("log chart with invalid values");
    assert_png(&path, DEFAULT_SIZE);

    // Everything unplottable: still a chart (with a note), not a panic.
    let path = dir.join("log_all_bad.png");
    let chart = LineChart {
        title: "Nothing plottable".to_string(),
        log_y: true,
        series: vec![Series::new(
            "zeros",
            vec![(0.0, 0.0), (1.0, f64::NAN)],
            palette(0),
        )],
        ..LineChart::default()
    };
    line_chart(&path, &chart).expect("all-invalid log chart");
    assert_png(&path, DEFAULT_SIZE);
}

#[test]
fn linear_line_chart_with_few_and_many_points() {
    let (_guard, dir) = out_dir();
    let path = dir.join("training_loss.png");
    let loss = |rate: f64, noise: f64| -> Vec<(f64, f64)> {
        (0..3000)
            .map(|s| {
                let s = f64::from(s);
                let wobble = noise * ((s * 0.37).sin() + (s * 1.91).cos()) / 2.0;
                (s, 0.06 + 0.11 * (-s / rate).exp() + wobble * 0.01)
            })
            .collect()
    };
    let chart = LineChart {
        title: "Training loss, copy task, delay 50".to_string(),
        subtitle: Some("MSE on the target token; evaluated on held-out sequences".to_string()),
        x_label: "training step".to_string(),
        y_label: "MSE".to_string(),
        series: vec![
            Series::new("RNN", loss(1e9, 1.0), palette(0)),
            Series::new("LSTM", loss(600.0, 1.0), palette(1)),
            Series::new(
                "LSTM (eval)",
                (0..=6)
                    .map(|i| {
                        (
                            f64::from(i) * 500.0,
                            0.06 + 0.11 * (-f64::from(i) * 500.0 / 600.0).exp(),
                        )
                    })
                    .collect(),
                palette(2),
            ),
        ],
        hlines: vec![HLine::new(
            "baseline MSE 0.167 (predict the mean)",
            0.167,
            Color::GREY,
        )],
        y_range: Some((0.0, 0.2)),
        legend: LegendPos::Auto,
        ..LineChart::default()
    };
    line_chart(&path, &chart).expect("linear chart");
    assert_png(&path, DEFAULT_SIZE);
}

#[test]
fn two_panel_chart_renders() {
    let (_guard, dir) = out_dir();
    let path = dir.join("init_vs_trained.png");
    let mut left = gradient_chart("At initialisation");
    left.subtitle = Some("median over 64 sequences".to_string());
    let mut right = gradient_chart("After 5000 training steps");
    right.subtitle = Some("median over 64 sequences".to_string());
    right.series[0].points = rnn_decay()
        .into_iter()
        .map(|(x, y)| (x, y * 10f64.powf(0.03 * x)))
        .collect();
    right.series.pop();
    two_panel_line_chart(&path, &left, &right).expect("two panels");
    assert_png(&path, TWO_PANEL_SIZE);
}

/// Three panels side by side, each as wide as one of two; a vertical reference line (with a
/// thin noisy series, as the clipping charts draw per-step gradient norms) in one of them.
#[test]
fn panel_chart_with_vertical_line_renders() {
    let (_guard, dir) = out_dir();
    let path = dir.join("three_panels.png");
    let mut middle = gradient_chart("Per-step gradient norm");
    middle.series = vec![
        Series::new(
            "noisy",
            (0..800)
                .map(|k| (k as f64, 1.0 + 0.5 * (k as f64 * 0.7).sin()))
                .collect(),
            Color::BLUE,
        )
        .thin(),
    ];
    middle.vlines = vec![VLine::new("diverged at step 39", 39.0, Color::VERMILLION)];
    let panels = [gradient_chart("RNN"), middle, gradient_chart("GRU")];
    panel_line_chart(&path, &panels).expect("three panels");
    assert_png(&path, (3 * TWO_PANEL_SIZE.0 / 2, TWO_PANEL_SIZE.1));
    assert!(
        panel_line_chart(&path, &[]).is_err(),
        "no panels is an error"
    );
}

#[test]
fn band_chart_renders() {
    let (_guard, dir) = out_dir();
    let path = dir.join("accuracy_vs_length.png");
    let lengths = [10.0, 20.0, 50.0, 100.0, 200.0];
    let rnn = [0.98, 0.81, 0.31, 0.14, 0.13];
    let lstm = [1.0, 0.99, 0.97, 0.90, 0.74];
    let band = |label: &str, acc: &[f64], spread: f64, color| Band {
        label: label.to_string(),
        color,
        points: lengths
            .iter()
            .zip(acc)
            .map(|(&x, &m)| (x, m, (m - spread).max(0.0), (m + spread * 0.7).min(1.0)))
            .collect(),
    };
    let chart = BandChart {
        title: "Copy-task accuracy vs sequence length".to_string(),
        subtitle: Some("mean over 5 seeds; shaded: min..max over seeds".to_string()),
        x_label: "sequence length (log scale)".to_string(),
        y_label: "accuracy".to_string(),
        log_x: true,
        bands: vec![
            band("RNN", &rnn, 0.08, palette(0)),
            band("LSTM", &lstm, 0.05, palette(1)),
        ],
        hlines: vec![HLine::new("chance 1/8", 0.125, Color::GREY)],
        y_range: Some((0.0, 1.05)),
        legend: LegendPos::Auto,
    };
    band_chart(&path, &chart).expect("band chart");
    assert_png(&path, DEFAULT_SIZE);

    // A linear x axis, a single band with one point, and bad values.
    let path = dir.join("band_small.png");
    let chart = BandChart {
        title: "Single point".to_string(),
        x_label: "x".to_string(),
        y_label: "y".to_string(),
        bands: vec![Band {
            label: "only".to_string(),
            color: palette(2),
            points: vec![(3.0, 0.5, 0.4, 0.6), (4.0, f64::NAN, 0.0, 1.0)],
        }],
        ..BandChart::default()
    };
    band_chart(&path, &chart).expect("small band chart");
    assert_png(&path, DEFAULT_SIZE);
}

#[test]
fn heatmap_renders() {
    let (_guard, dir) = out_dir();
    let path = dir.join("gradient_heatmap.png");
    let rows = 20;
    let cols = 100;
    let values: Vec<Vec<f64>> = (0..rows)
        .map(|r| {
            (0..cols)
                .map(|c| {
                    if r == 7 && (40..45).contains(&c) {
                        return f64::NAN; // missing measurements
                    }
                    let distance = f64::from(cols - 1 - c);
                    let decay = 0.11 - 0.004 * f64::from(r);
                    -1.0 - decay * distance + 0.2 * (f64::from(r * c) * 0.1).sin()
                })
                .collect()
        })
        .collect();
    let h = Heatmap {
        title: "RNN gradient norm over training".to_string(),
        subtitle: Some("log10 ‖∂L/∂h_t‖ for a loss at t = 99".to_string()),
        x_label: "timestep t".to_string(),
        y_label: "training step".to_string(),
        colorbar_label: "log10 ‖∂L/∂h_t‖".to_string(),
        x_values: (0..cols).map(f64::from).collect(),
        y_values: (0..rows).map(|r| f64::from(r) * 250.0).collect(),
        values,
        value_range: None,
    };
    heatmap(&path, &h).expect("heatmap");
    assert_png(&path, DEFAULT_SIZE);

    // A fixed colour scale narrower than the data and a tiny grid.
    let path = dir.join("heatmap_small.png");
    let h = Heatmap {
        title: "2 x 3".to_string(),
        x_values: vec![1.0, 2.0, 4.0],
        y_values: vec![10.0, 0.0],
        values: vec![vec![0.0, 1.0, 2.0], vec![3.0, f64::INFINITY, 5.0]],
        value_range: Some((1.0, 4.0)),
        colorbar_label: "value".to_string(),
        ..Heatmap::default()
    };
    heatmap(&path, &h).expect("small heatmap");
    assert_png(&path, DEFAULT_SIZE);
}

#[test]
fn extreme_and_dense_data_do_not_panic() {
    let (_guard, dir) = out_dir();
    // 20 000 points spanning 600 decades, with zeros, subnormals and infinities mixed in.
    let points: Vec<(f64, f64)> = (0..20_000)
        .map(|i| {
            let x = f64::from(i);
            let y = match i % 97 {
                0 => 0.0,
                1 => f64::MIN_POSITIVE / 1e10,
                2 => f64::INFINITY,
                _ => 10f64.powf(300.0 - x * 0.03),
            };
            (x, y)
        })
        .collect();
    let chart = LineChart {
        title: "Extreme values".to_string(),
        log_y: true,
        series: vec![Series::new("wild", points.clone(), palette(0))],
        ..LineChart::default()
    };
    let path = dir.join("extreme_log.png");
    line_chart(&path, &chart).expect("extreme log chart");
    assert_png(&path, DEFAULT_SIZE);

    let chart = LineChart {
        title: "Extreme values, linear".to_string(),
        series: vec![Series::new("wild", points, palette(0))],
        ..LineChart::default()
    };
    let path = dir.join("extreme_linear.png");
    line_chart(&path, &chart).expect("extreme linear chart");
    assert_png(&path, DEFAULT_SIZE);
}

#[test]
fn errors_are_reported_not_panics() {
    let (_guard, dir) = out_dir();

    let empty = LineChart {
        title: "empty".to_string(),
        ..LineChart::default()
    };
    let err = line_chart(&dir.join("empty.png"), &empty).unwrap_err();
    assert!(format!("{err:#}").contains("nothing to draw"), "{err:#}");
    assert!(
        !dir.join("empty.png").exists(),
        "no file for a failed chart"
    );

    let chart = gradient_chart("unwritable");
    let missing = dir.join("no/such/dir/chart.png");
    let err = line_chart(&missing, &chart).unwrap_err();
    assert!(format!("{err:#}").contains("chart.png"), "{err:#}");

    let err = line_chart(&dir.join("chart.jpg"), &chart).unwrap_err();
    assert!(format!("{err:#}").contains(".png"), "{err:#}");

    let bad_range = LineChart {
        y_range: Some((0.0, 1.0)),
        ..gradient_chart("bad range")
    };
    let err = line_chart(&dir.join("bad_range.png"), &bad_range).unwrap_err();
    assert!(format!("{err:#}").contains("positive"), "{err:#}");

    let ragged = Heatmap {
        x_values: vec![0.0, 1.0],
        y_values: vec![0.0, 1.0],
        values: vec![vec![1.0, 2.0], vec![3.0]],
        ..Heatmap::default()
    };
    assert!(heatmap(&dir.join("ragged.png"), &ragged).is_err());

    let unsorted = Heatmap {
        x_values: vec![0.0, 2.0, 1.0],
        y_values: vec![0.0],
        values: vec![vec![1.0, 2.0, 3.0]],
        ..Heatmap::default()
    };
    assert!(heatmap(&dir.join("unsorted.png"), &unsorted).is_err());

    assert!(band_chart(&dir.join("no_bands.png"), &BandChart::default()).is_err());
}
