//! Output buffers that a kernel fills completely, allocated without zeroing them first.
//!
//! Zeroing the outputs of every projection had been 2% of an encoder pass, run on one core
//! while the other waited for the next parallel loop: the kernels overwrite every element
//! anyway.
#![allow(unsafe_code)]

use std::mem::MaybeUninit;

/// A buffer of `len` floats, which `fill` is given as uninitialised slots to write.
///
/// # Safety
/// `fill` must write every one of the `len` slots.
pub(crate) unsafe fn filled(len: usize, fill: impl FnOnce(&mut [MaybeUninit<f32>])) -> Vec<f32> {
    let mut buffer = Vec::with_capacity(len);
    fill(&mut buffer.spare_capacity_mut()[..len]);
    // SAFETY: the caller promised that `fill` wrote every slot.
    unsafe { buffer.set_len(len) };
    buffer
}

/// Initialised floats as slots a kernel may write.
///
/// # Safety
/// Nothing may store an uninitialised value (`MaybeUninit::uninit()`) through the slots: the
/// floats must stay initialised.
pub(crate) unsafe fn as_uninit(out: &mut [f32]) -> &mut [MaybeUninit<f32>] {
    // SAFETY: `MaybeUninit<f32>` has the layout of `f32`; the caller keeps the floats
    // initialised.
    unsafe { &mut *(out as *mut [f32] as *mut [MaybeUninit<f32>]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filled_buffer_holds_what_was_written() {
        // SAFETY: the closure writes all 1000 slots.
        let buffer = unsafe {
            filled(1000, |slots| {
                for (i, slot) in slots.iter_mut().enumerate() {
                    slot.write(i as f32);
                }
            })
        };
        assert_eq!(buffer.len(), 1000);
        assert!(buffer.iter().enumerate().all(|(i, &v)| v == i as f32));
    }

    #[test]
    fn writes_through_slots_land_in_the_floats() {
        let mut floats = vec![1.0f32; 4];
        // SAFETY: only an initialised value is stored.
        let slots = unsafe { as_uninit(&mut floats) };
        slots[2].write(7.0);
        assert_eq!(floats, [1.0, 1.0, 7.0, 1.0]);
    }
}
