"""Loss functions: pure functions over batches (image losses over (B*V, 3, H, W))."""

from shapes3d.losses.image import content_loss, gram_matrix, l1, l2, mse, psnr, rmse, ssim, style_loss, total_variation

__all__ = ["content_loss", "gram_matrix", "l1", "l2", "mse", "psnr", "rmse", "ssim", "style_loss", "total_variation"]
