//! Weighted window sums over one spatial axis of a pair block: the building block of the
//! conv and average-pooling kernel rules, which both act on one axis at a time (their
//! windows are rectangles, so the 2-D sums factor into a row pass and a column pass).
//!
//! A *tap* `(dx, dy, weight)` says: output position `a` (of `x`) and `b` (of `y`) receive
//! `weight ×` the input entry at positions `a·stride + dx − pad` and `b·stride + dy − pad`;
//! positions outside `[0, n)` are zero padding and contribute nothing.

use crate::covariance::Layout;

/// The spatial axis a pass runs along.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Axis {
    /// H.
    Rows,
    /// W.
    Cols,
}

/// Geometry of a window pass along one axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AxisWindow {
    /// Output size along the axis.
    pub out: usize,
    pub stride: usize,
    /// Zeros before the first input position.
    pub pad: usize,
}

fn source(out_pos: usize, offset: usize, window: AxisWindow, n: usize) -> Option<usize> {
    (out_pos * window.stride + offset)
        .checked_sub(window.pad)
        .filter(|&i| i < n)
}

/// One pass over `axis` of a [`Layout::Full`] or [`Layout::Diagonal`] block.
///
/// For `Full`, taps are `(dx, dy, weight)` (offsets on the `x` and `y` positions); for
/// `Diagonal` only taps with `dx == dy` make sense and `dy` is ignored.
///
/// # Shapes
/// `input`: `layout.len()`; returns the new layout (the `axis` size replaced by
/// `window.out`) and its block.
pub fn window_pass(
    layout: Layout,
    input: &[f64],
    axis: Axis,
    window: AxisWindow,
    taps: &[(usize, usize, f64)],
) -> (Layout, Vec<f64>) {
    match layout {
        Layout::Vector => (layout, input.to_vec()),
        Layout::Diagonal { h, w } => {
            let (oh, ow) = match axis {
                Axis::Rows => (window.out, w),
                Axis::Cols => (h, window.out),
            };
            let mut out = vec![0.0; oh * ow];
            for a in 0..oh {
                for b in 0..ow {
                    let mut acc = 0.0;
                    for &(d, _, wt) in taps {
                        let src = match axis {
                            Axis::Rows => source(a, d, window, h).map(|r| r * w + b),
                            Axis::Cols => source(b, d, window, w).map(|c| a * w + c),
                        };
                        if let Some(s) = src {
                            acc += wt * input[s];
                        }
                    }
                    out[a * ow + b] = acc;
                }
            }
            (Layout::Diagonal { h: oh, w: ow }, out)
        }
        Layout::Full { h, w } => match axis {
            Axis::Rows => {
                let on = window.out;
                // [on, w, on, w]
                let mut out = vec![0.0; on * w * on * w];
                for a in 0..on {
                    for c in 0..on {
                        for &(dx, dy, wt) in taps {
                            let (Some(r1), Some(r2)) =
                                (source(a, dx, window, h), source(c, dy, window, h))
                            else {
                                continue;
                            };
                            for w1 in 0..w {
                                let src = &input[((r1 * w + w1) * h + r2) * w..][..w];
                                let dst = &mut out[((a * w + w1) * on + c) * w..][..w];
                                for (o, s) in dst.iter_mut().zip(src) {
                                    *o += wt * s;
                                }
                            }
                        }
                    }
                }
                (Layout::Full { h: on, w }, out)
            }
            Axis::Cols => {
                let on = window.out;
                // [h, on, h, on]
                let mut out = vec![0.0; h * on * h * on];
                for h1 in 0..h {
                    for b in 0..on {
                        for h2 in 0..h {
                            let dst = &mut out[((h1 * on + b) * h + h2) * on..][..on];
                            for &(dx, dy, wt) in taps {
                                let Some(c1) = source(b, dx, window, w) else {
                                    continue;
                                };
                                let row = &input[((h1 * w + c1) * h + h2) * w..][..w];
                                for (e, o) in dst.iter_mut().enumerate() {
                                    if let Some(c2) = source(e, dy, window, w) {
                                        *o += wt * row[c2];
                                    }
                                }
                            }
                        }
                    }
                }
                (Layout::Full { h, w: on }, out)
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Brute force: out[(a,b),(c,e)] = Σ over taps on rows and on columns.
    #[test]
    fn two_passes_equal_the_direct_2d_sum() {
        let (h, w) = (4, 5);
        let n = h * w;
        let input: Vec<f64> = (0..n * n)
            .map(|i| ((i * 7919) % 101) as f64 / 13.0)
            .collect();
        let layout = Layout::Full { h, w };
        let rows = AxisWindow {
            out: 2,
            stride: 2,
            pad: 1,
        };
        let cols = AxisWindow {
            out: 3,
            stride: 2,
            pad: 0,
        };
        let taps_r = [(0, 0, 0.5), (1, 1, 0.25), (2, 2, 0.25)];
        let taps_c = [(0, 1, 1.0), (1, 0, 2.0)];
        let (l1, t) = window_pass(layout, &input, Axis::Rows, rows, &taps_r);
        let (l2, out) = window_pass(l1, &t, Axis::Cols, cols, &taps_c);
        assert_eq!(l2, Layout::Full { h: 2, w: 3 });
        let at = |r1: isize, c1: isize, r2: isize, c2: isize| -> f64 {
            if r1 < 0 || r2 < 0 || c1 < 0 || c2 < 0 {
                return 0.0;
            }
            let (r1, c1, r2, c2) = (r1 as usize, c1 as usize, r2 as usize, c2 as usize);
            if r1 >= h || r2 >= h || c1 >= w || c2 >= w {
                return 0.0;
            }
            input[(r1 * w + c1) * n + r2 * w + c2]
        };
        for a in 0..2isize {
            for b in 0..3isize {
                for c in 0..2isize {
                    for e in 0..3isize {
                        let mut want = 0.0;
                        for &(dx, dy, wr) in &taps_r {
                            for &(ex, ey, wc) in &taps_c {
                                want += wr
                                    * wc
                                    * at(
                                        a * 2 + dx as isize - 1,
                                        b * 2 + ex as isize,
                                        c * 2 + dy as isize - 1,
                                        e * 2 + ey as isize,
                                    );
                            }
                        }
                        let got = out[((a * 3 + b) * 6 + c * 3 + e) as usize];
                        assert!((got - want).abs() < 1e-12, "{a}{b}{c}{e}: {got} vs {want}");
                    }
                }
            }
        }
    }
}
