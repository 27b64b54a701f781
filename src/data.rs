//! Bundled real datasets (nothing is downloaded).

use ntk_nets::HostArray;

/// The 8×8 handwritten digits (UCI optical recognition of handwritten digits, as bundled in
/// scikit-learn's `load_digits`): 1797 samples.
///
/// Returns `(x, labels)`: `x: [1797, 64]` with pixel values scaled from 0..16 to 0..1.
pub fn digits() -> (HostArray, Vec<usize>) {
    const CSV: &str = include_str!("../data/digits.csv");
    let mut x = Vec::with_capacity(1797 * 64);
    let mut y = Vec::with_capacity(1797);
    for line in CSV
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let v: Vec<f64> = line
            .split(',')
            .map(|t| {
                t.trim()
                    .parse::<f64>()
                    .expect("bundled digits.csv is well formed")
            })
            .collect();
        x.extend(v[..64].iter().map(|p| p / 16.0));
        y.push(v[64] as usize);
    }
    let n = y.len();
    (HostArray::new(vec![n, 64], x), y)
}

#[cfg(test)]
mod tests {
    #[test]
    fn digits_has_1797_samples_of_64_pixels_and_10_classes() {
        let (x, y) = super::digits();
        assert_eq!(x.shape, vec![1797, 64]);
        assert_eq!(*y.iter().max().unwrap(), 9);
        assert!(x.data.iter().all(|v| (0.0..=1.0).contains(v)));
        let mut counts = [0usize; 10];
        for c in &y {
            counts[*c] += 1;
        }
        assert_eq!(counts, [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]);
    }
}
